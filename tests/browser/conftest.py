"""A real server (gunicorn, the bundled models, a migrated SQLite database) and headless
Chromium driving it through Playwright. Debian's chromium: `make chromium` installs it."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import BUNDLED_MODELS, PASSWORD
from tests.security.servers import Server, prepare_database, start_servers

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "output" / "screenshots"
# Every expectation waits at most this long: a prediction on a warm server takes milliseconds.
TIMEOUT_MS = 10_000


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One gunicorn server for the browser tests, as `make run` starts it, over plain HTTP."""
    directory = tmp_path_factory.mktemp("browser-server")
    uri = f"sqlite:///{directory / 'modelgate.db'}"
    prepare_database(uri)
    (started,) = start_servers(
        directory,
        {
            "SQLALCHEMY_DATABASE_URI": uri,
            "JWT_SECRET_KEY": secrets.token_urlsafe(48),
            "JWT_COOKIE_SECURE": "false",  # http://127.0.0.1: a Secure cookie would not be sent
            "MODEL_WATCH_INTERVAL_SECONDS": "0",
            "JOB_POLL_INTERVAL_SECONDS": "0.2",
            "LOG_LEVEL": "WARNING",
        },
    )
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail(
            "Chromium is not installed, so the browser tests cannot run: "
            "`make chromium` (apt-get install -y chromium) installs Debian's package"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: pip install -r requirements-dev.txt")
    executable = str(CHROMIUM) if CHROMIUM.exists() else str(shutil.which("chromium"))
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def sessions(browser: Any, server: Server) -> dict[str, Any]:
    """Signed-in cookie jars by username, each signed in once through the sign-in form."""
    return {}


@pytest.fixture
def page_as(browser: Any, server: Server, sessions: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """page_as("deployer") -> a page in a fresh context signed in as that user (through the
    sign-in form, the first time per user); page_as(None) -> signed out."""
    contexts: list[Any] = []

    def open_page(username: str | None, *, width: int = 1280, height: int = 900) -> Any:
        state = sessions.get(username) if username else None
        context = browser.new_context(
            base_url=server.base,
            viewport={"width": width, "height": height},
            storage_state=state,
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        if username and state is None:
            sign_in(page, username)
            sessions[username] = context.storage_state()
        return page

    errors: list[str] = []
    yield open_page
    for context in contexts:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def sign_in(page: Any, username: str, next_path: str = "/") -> None:
    page.goto(f"/login?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{next_path}")


def screenshot(page: Any, name: str) -> Path:
    """Save the whole page under tests/output/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_until(check: Callable[[], bool], timeout: float = TIMEOUT_MS / 1000) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def holdout_digit(tmp_path: Path, index: int = 0) -> tuple[Path, str]:
    """A holdout digit as a person would upload it: enlarged, dark ink on white."""
    data = np.load(BUNDLED_MODELS / "digits" / "holdout.npz")
    grey = 255 - (data["x"][index].reshape(8, 8) * 255).astype(np.uint8)
    image = Image.fromarray(grey, mode="L").resize((96, 96), Image.Resampling.NEAREST)
    framed = Image.new("L", (136, 136), 255)
    framed.paste(image, (20, 20))
    path = tmp_path / f"digit-{index}.png"
    framed.convert("RGB").save(path)
    return path, str(int(data["y"][index]))

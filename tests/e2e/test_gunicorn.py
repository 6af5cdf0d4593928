"""Start the real server the way `make run` does and call it over HTTP."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.conftest import BUNDLED_MODELS, PASSWORD, png_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gunicorn with 2 workers on the bundled models, a fresh SQLite database migrated with
    `flask db upgrade` and a user created with `flask users create`, as an operator would."""
    workdir = tmp_path_factory.mktemp("e2e")
    port = _free_port()
    env = {
        **os.environ,
        "MODELGATE_BIND": f"127.0.0.1:{port}",
        "MODELGATE_WORKERS": "2",
        "MODELGATE_THREADS": "2",
        "MODELGATE_JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "MODELGATE_SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'state.db'}",
    }
    bin_dir = Path(sys.executable).parent
    flask = [str(bin_dir / "flask"), "--app", "app"]
    for command in (
        ["db", "upgrade"],
        ["users", "create", "e2e", "--role", "predictor", "--password", PASSWORD],
    ):
        subprocess.run(
            [*flask, *command], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120
        )
    log = (workdir / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [str(bin_dir / "gunicorn"), "-c", "gunicorn.conf.py", "app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert process.poll() is None, (workdir / "gunicorn.log").read_text()[-3000:]
            try:
                if requests.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # refused while booting, slow while loading
                pass
            time.sleep(0.5)
        else:
            pytest.fail("gunicorn did not become ready in time")
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def auth(server: str) -> dict[str, str]:
    response = requests.post(
        f"{server}/auth/token", json={"username": "e2e", "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_health_answers_as_v2_clients_expect(server: str) -> None:
    assert requests.get(f"{server}/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(f"{server}/v2/health/ready", timeout=5).json() == {"ready": True}


def test_uploading_a_digit_over_http_predicts_it(server: str, auth: dict[str, str]) -> None:
    holdout = np.load(BUNDLED_MODELS / "digits" / "holdout.npz")
    x, y = holdout["x"], holdout["y"]
    files = []
    for i in range(3):
        grey = 255 - (x[i].reshape(8, 8) * 255).astype(np.uint8)
        image = Image.fromarray(grey, mode="L").resize((80, 80), Image.Resampling.NEAREST)
        files.append(("file", (f"digit{i}.png", png_bytes(image), "image/png")))
    response = requests.post(
        f"{server}/api/models/digits/predict", files=files, headers=auth, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Model-Version"] == str(body["version"])
    assert [p["label"] for p in body["predictions"]] == [str(t) for t in y[:3]]


def test_v2_infer_without_content_type_over_http(server: str, auth: dict[str, str]) -> None:
    payload = (
        '{"id": "e2e-1", "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4],'
        ' "data": [5.1, 3.5, 1.4, 0.2]}]}'
    )
    response = requests.post(
        f"{server}/v2/models/iris/infer",
        data=payload.encode(),
        timeout=30,
        headers={**auth, "Content-Type": ""},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "e2e-1"
    assert np.argmax(body["outputs"][0]["data"]) == 0  # setosa


def test_errors_over_http_use_the_envelope_without_internals(
    server: str, auth: dict[str, str]
) -> None:
    response = requests.post(
        f"{server}/api/models/digits/predict",
        files={"file": ("x.png", b"not an image", "image/png")},
        headers=auth,
        timeout=30,
    )
    assert response.status_code == 415
    body = response.json()
    assert body["code"] == "unsupported_media_type"
    assert "Traceback" not in response.text and "/work" not in response.text


def test_credentials_are_required_over_http_and_the_server_is_not_named(server: str) -> None:
    response = requests.get(f"{server}/api/models", timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "gunicorn" not in response.headers.get("Server", "").lower()

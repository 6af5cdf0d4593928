"""The prediction pages in headless Chromium: sign in, upload, draw, compare, and the errors a
user sees. Each test asserts what is on the screen and saves a screenshot."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.browser.conftest import holdout_digit, screenshot, sign_in
from tests.conftest import PASSWORD
from tests.security.servers import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def ready_versions(server: Server, model: str) -> list[int]:
    token = requests.post(
        server.url("/auth/token"), json={"username": "viewer", "password": PASSWORD}, timeout=10
    ).json()["access_token"]
    answer = requests.get(
        server.url(f"/api/models/{model}"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    return [v["version"] for v in answer.json()["versions"] if v["state"] == "READY"]


def test_signing_in_returns_to_the_page_asked_for_with_the_roles_navigation(
    page_as: Callable[..., Any],
) -> None:
    page = page_as(None)
    page.goto("/try")
    assert "/login?next=/try" in page.url
    screenshot(page, "sign-in")

    sign_in(page, "predictor", "/try")

    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link").all_inner_texts() == [
        "Try a model",
        "Compare",
        "Models",
        "Jobs",
        "API docs",
    ]
    assert page.locator(".who").inner_text() == "predictor PREDICTOR"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login?signed_out=1")
    assert page.get_by_role("status").first.inner_text() == "You are signed out."


def test_uploading_a_digit_image_shows_its_label_version_and_route(
    page_as: Callable[..., Any], tmp_path: Path
) -> None:
    image, label = holdout_digit(tmp_path)
    page = page_as("predictor")
    page.goto("/try?model=digits")
    page.get_by_label("Upload images").check()
    page.locator("input[type=file]").set_input_files(str(image))
    page.get_by_role("button", name="Predict").click()

    result = page.locator(".result").first
    assert result.locator(".label-text").inner_text() == label
    meta = page.locator(".run-meta").inner_text()
    assert re.search(r"version \d+", meta), meta
    assert re.search(r"route: (stable|latest|weighted|experiment|sticky)", meta), meta
    assert re.search(r"\d+(\.\d+)? ms", meta), meta
    bars = result.locator(".bars li")
    assert bars.count() >= 2 and bars.first.locator(".bar-label").inner_text() == label
    screenshot(page, "try-upload")


def test_several_images_get_one_answer_each(page_as: Callable[..., Any], tmp_path: Path) -> None:
    images = [holdout_digit(tmp_path, i) for i in (0, 1, 2)]
    page = page_as("predictor")
    page.goto("/try?model=digits")
    page.get_by_label("Upload images").check()
    page.locator("input[type=file]").set_input_files([str(path) for path, _ in images])
    page.get_by_role("button", name="Predict").click()

    page.locator(".result").nth(2).wait_for()
    assert page.locator(".result .label-text").all_inner_texts() == [lab for _, lab in images]


def test_drawing_a_digit_on_the_canvas_gets_a_prediction(page_as: Callable[..., Any]) -> None:
    page = page_as("predictor")
    page.goto("/try?model=digits")
    canvas = page.get_by_role("img", name=re.compile("Drawing area"))
    box = canvas.bounding_box()
    scale = box["width"] / 280

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + x * scale, box["y"] + y * scale

    # A seven: the top bar, then the stroke down to the bottom left.
    page.mouse.move(*at(70, 60))
    page.mouse.down()
    for point in [(140, 60), (210, 60), (170, 150), (130, 240)]:
        page.mouse.move(*at(*point), steps=8)
    page.mouse.up()
    page.get_by_role("button", name="Predict").click()

    assert page.locator(".result .label-text").inner_text() == "7"
    assert "drawing" in page.locator(".result").inner_text()
    screenshot(page, "try-draw")

    page.get_by_role("button", name="Clear").click()
    page.get_by_role("button", name="Predict").click()
    assert page.get_by_role("alert").inner_text() == "Draw a digit first."


def test_the_feature_form_predicts_iris_from_the_keyboard(page_as: Callable[..., Any]) -> None:
    page = page_as("predictor")
    page.goto("/try?model=iris")
    for name, value in (("sepal length", "5.1"), ("sepal width", "3.5")):
        page.get_by_label(name).fill(value)
    page.get_by_label("petal length").focus()
    page.keyboard.type("1.4")
    page.keyboard.press("Tab")
    page.keyboard.type("0.2")
    page.keyboard.press("Enter")

    assert page.locator(".result .label-text").inner_text() == "setosa"


def test_compare_shows_every_ready_version_side_by_side(
    page_as: Callable[..., Any], server: Server, tmp_path: Path
) -> None:
    image, label = holdout_digit(tmp_path)
    versions = ready_versions(server, "digits")
    page = page_as("predictor")
    page.goto("/compare?model=digits")
    page.get_by_label("Upload images").check()
    page.locator("input[type=file]").set_input_files(str(image))
    page.get_by_role("button", name="Compare", exact=True).click()

    columns = page.locator(".compare-col")
    columns.first.wait_for()
    titles = columns.locator("h3 > span:first-child").all_inner_texts()
    assert sorted(titles) == sorted(f"Version {v}" for v in versions)
    assert set(columns.locator(".label-text").all_inner_texts()) == {label}
    assert "agree" in page.locator(".agreement").inner_text()
    screenshot(page, "compare")


def test_compare_through_an_ensemble_shows_its_members(
    page_as: Callable[..., Any], tmp_path: Path
) -> None:
    image, label = holdout_digit(tmp_path)
    page = page_as("predictor")
    page.goto("/compare?model=digits-ensemble")
    page.get_by_label("Upload images").check()
    page.locator("input[type=file]").set_input_files(str(image))
    page.get_by_role("button", name="Compare", exact=True).click()

    page.locator(".compare-col").first.wait_for()
    titles = page.locator(".compare-col h3 > span:first-child").all_inner_texts()
    assert titles == ["digits v1", "digits v2", "Ensemble"]
    assert set(page.locator(".compare-col .label-text").all_inner_texts()) == {label}


def test_an_oversize_upload_says_so_before_sending(
    page_as: Callable[..., Any], tmp_path: Path
) -> None:
    big = tmp_path / "huge.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(11 * 1024 * 1024))
    page = page_as("predictor")
    page.goto("/try?model=digits")
    page.get_by_label("Upload images").check()
    page.locator("input[type=file]").set_input_files(str(big))
    requests_sent: list[str] = []
    page.on("request", lambda r: requests_sent.append(r.url) if "/predict" in r.url else None)
    page.get_by_role("button", name="Predict").click()

    alert = page.get_by_role("alert")
    assert alert.inner_text() == (
        "Too large: huge.png is 11 MiB; a request may carry at most 10 MiB. Choose a smaller image."
    )
    assert requests_sent == []
    screenshot(page, "try-too-large")


def test_a_file_that_is_not_an_image_gets_the_servers_reason(
    page_as: Callable[..., Any], tmp_path: Path
) -> None:
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    page = page_as("predictor")
    page.goto("/try?model=digits")
    page.get_by_label("Upload images").check()
    page.locator("input[type=file]").set_input_files(str(text))
    page.get_by_role("button", name="Predict").click()

    assert page.get_by_role("alert").inner_text().startswith("Not an image ModelGate can read")


@pytest.mark.parametrize(
    ("status", "body", "headers", "shown"),
    [
        (
            429,
            {"error": "rate limit exceeded", "code": "too_many_requests", "status": 429},
            {"Retry-After": "17"},
            "Too many requests. Try again in 17 s.",
        ),
        (
            403,
            {"error": "no scope allows inference on 'digits'", "code": "forbidden", "status": 403},
            {},
            "Not allowed: no scope allows inference on 'digits'.",
        ),
        (
            413,
            {"error": "request bodies are limited", "code": "payload_too_large", "status": 413},
            {},
            "Too large: request bodies are limited.",
        ),
    ],
)
def test_refusals_from_the_server_read_as_sentences(
    page_as: Callable[..., Any],
    tmp_path: Path,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    shown: str,
) -> None:
    image, _ = holdout_digit(tmp_path)
    page = page_as("predictor")
    page.route(
        "**/api/models/digits/predict",
        lambda route: route.fulfill(
            status=status,
            content_type="application/json",
            headers=headers,
            body=json.dumps(body),
        ),
    )
    page.goto("/try?model=digits")
    page.get_by_label("Upload images").check()
    page.locator("input[type=file]").set_input_files(str(image))
    page.get_by_role("button", name="Predict").click()

    assert page.get_by_role("alert").inner_text() == shown


def test_the_try_page_fits_a_narrow_phone_screen(
    page_as: Callable[..., Any], tmp_path: Path
) -> None:
    image, label = holdout_digit(tmp_path)
    page = page_as("predictor", width=375, height=800)
    page.goto("/try?model=digits")
    page.get_by_label("Upload images").check()
    page.locator("input[type=file]").set_input_files(str(image))
    page.get_by_role("button", name="Predict").click()
    assert page.locator(".result .label-text").inner_text() == label

    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways: {width} px"
    screenshot(page, "try-375px")

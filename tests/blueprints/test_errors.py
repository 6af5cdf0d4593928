"""The one error envelope, whoever raises, and the request id on every answer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from flask import Flask, abort
from flask.testing import FlaskClient

from extensions import inference_service
from serving.manifest import VersionSpec
from serving.runtimes.fake import FakeRuntime
from tests.conftest import assert_error, client_as

SECRET = "/srv/modelgate/internal/secret.py"


def assert_nothing_leaks(body: str) -> None:
    assert "Traceback" not in body
    assert SECRET not in body
    assert "RuntimeError" not in body


def test_unknown_route_is_a_404_envelope(client: FlaskClient) -> None:
    body = assert_error(client.get("/api/nothing/here"), 404, "not_found")

    assert "not found" in body["error"].lower()


def test_wrong_method_is_a_405_envelope_with_allow(client: FlaskClient) -> None:
    response = client.delete("/api/models/tab/predict")

    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_unexpected_exception_in_a_view_is_500_without_internals(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"cannot open {SECRET}")

    with app.app_context():
        monkeypatch.setattr(inference_service(), "predict", explode)

    response = client_as(app, "admin").post(
        "/api/models/tab/predict", json={"instances": [[1, 2, 3]]}
    )

    body = assert_error(response, 500, "internal_error")
    assert body["error"] == "internal server error"
    assert "details" not in body
    assert_nothing_leaks(response.get_data(as_text=True))


def test_http_500_raised_by_a_view_hides_its_description(app: Flask) -> None:
    app.add_url_rule("/api/boom", "boom", lambda: abort(500, f"db at {SECRET} is down"))

    response = client_as(app, "admin").get("/api/boom")

    assert assert_error(response, 500, "internal_server_error")["error"] == "internal server error"
    assert_nothing_leaks(response.get_data(as_text=True))


def test_runtime_failure_is_500_inference_failed_without_its_text(
    app: Flask, client: FlaskClient
) -> None:
    def boom(spec: VersionSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError(f"kernel crashed in {SECRET}")

    with app.app_context():
        runtime = inference_service().version("tab").runtime
    assert isinstance(runtime, FakeRuntime)
    runtime.behaviour = boom

    response = client.post("/api/models/tab/predict", json={"instances": [[1, 2, 3]]})

    body = assert_error(response, 500, "inference_failed")
    assert body["error"] == "model 'tab' version 2 failed to run the batch"
    assert_nothing_leaks(response.get_data(as_text=True))


def test_errors_answer_json_even_to_browsers(client: FlaskClient) -> None:
    response = client.get("/api/models/nope", headers={"Accept": "text/html"})

    assert_error(response, 404, "model_not_found")


@pytest.mark.parametrize("request_id", ["abc", "trace-1.2_3", "A" * 64])
def test_sane_request_id_is_echoed(client: FlaskClient, request_id: str) -> None:
    response = client.get("/v2/health/live", headers={"X-Request-ID": request_id})

    assert response.headers["X-Request-ID"] == request_id


@pytest.mark.parametrize("request_id", ["", "has space", "A" * 65, "a;b", "<script>"])
def test_insane_request_id_is_replaced_by_a_generated_one(
    client: FlaskClient, request_id: str
) -> None:
    response = client.get("/v2/health/live", headers={"X-Request-ID": request_id})

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_request_id_is_generated_fresh_for_each_request(client: FlaskClient) -> None:
    first = client.get("/v2/health/live").headers["X-Request-ID"]
    second = client.get("/v2/health/live").headers["X-Request-ID"]

    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_request_id_in_an_error_body_matches_the_header(client: FlaskClient) -> None:
    response = client.get("/api/models/nope", headers={"X-Request-ID": "client-trace"})

    assert assert_error(response, 404, "model_not_found")["request_id"] == "client-trace"

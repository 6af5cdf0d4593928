from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from extensions import inference_service
from serving.errors import RuntimeLoadError
from serving.manifest import VersionSpec
from serving.runtimes.fake import FakeRuntime
from serving.settings import ServingSettings
from tests import fake_repo
from tests.conftest import assert_error, client_as

MakeApp = Callable[..., Flask]

TWO_OUTPUTS = """
runtime = "fake"
artifact = "model.bin"

[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 3]

[[outputs]]
name = "scores"
datatype = "FP32"
shape = [-1, 3]

[[outputs]]
name = "best"
datatype = "INT64"
shape = [-1, 1]
"""


def scores_and_best(spec: VersionSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    x = inputs["x"]
    return {"scores": x, "best": x.argmax(axis=1, keepdims=True).astype(np.int64)}


def two_outputs_factory(spec: VersionSpec, settings: ServingSettings) -> FakeRuntime:
    return FakeRuntime(spec, scores_and_best)


def infer_body(data: Any, shape: list[int], datatype: str = "FP32", **extra: Any) -> str:
    tensor = {"name": "x", "datatype": datatype, "shape": shape, "data": data}
    return json.dumps({"inputs": [tensor], **extra})


# -- health and server metadata ----------------------------------------------------------------


def test_server_metadata(client: FlaskClient) -> None:
    response = client.get("/v2")

    assert response.status_code == 200
    assert response.get_json() == {
        "name": "modelgate",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }


def test_live_and_ready_once_models_loaded(client: FlaskClient) -> None:
    live, ready = client.get("/v2/health/live"), client.get("/v2/health/ready")

    assert (live.status_code, live.get_json()) == (200, {"live": True})
    assert (ready.status_code, ready.get_json()) == (200, {"ready": True})


def test_not_ready_when_no_version_could_load(tmp_path: Path, make_app: MakeApp) -> None:
    fake_repo.write_version(tmp_path, "broken", 1, "runtime = [")
    client = client_as(make_app(root=tmp_path), "admin")

    response = client.get("/v2/health/ready")

    assert (response.status_code, response.get_json()) == (503, {"ready": False})
    assert client.get("/v2/health/live").get_json() == {"live": True}


class GatedRuntime(FakeRuntime):
    """Loads only once the test opens the gate, so "still loading" lasts as long as needed."""

    def __init__(self, spec: VersionSpec, gate: threading.Event) -> None:
        super().__init__(spec)
        self.gate = gate

    def load(self) -> None:
        if not self.gate.wait(timeout=10):
            raise RuntimeLoadError("the test never opened the gate")
        super().load()


def test_not_ready_while_models_load_in_the_background(make_app: MakeApp) -> None:
    gate = threading.Event()
    app = make_app(
        factories={"fake": lambda spec, settings: GatedRuntime(spec, gate)},
        LOAD_MODELS_IN_BACKGROUND=True,
    )
    client = client_as(app, "admin")
    try:
        assert client.get("/v2/health/live").get_json() == {"live": True}
        assert client.get("/v2/health/ready").status_code == 503
        loading = client.post("/v2/models/tab/infer", data=infer_body([1, 2, 3], [1, 3]))
        assert_error(loading, 503, "model_not_ready")
        assert loading.headers["Retry-After"] == "1"
    finally:
        gate.set()
    with app.app_context():
        assert inference_service().wait_loaded(timeout_seconds=10)

    assert client.get("/v2/health/ready").get_json() == {"ready": True}


# -- model metadata and readiness --------------------------------------------------------------


def test_model_metadata_gives_signature_of_the_newest_ready_version(client: FlaskClient) -> None:
    response = client.get("/v2/models/tab")

    assert response.status_code == 200
    assert response.get_json() == {
        "name": "tab",
        "versions": ["1", "2", "3"],
        "platform": "fake",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
    }


def test_version_metadata(client: FlaskClient) -> None:
    response = client.get("/v2/models/img/versions/1")

    assert response.status_code == 200
    body = response.get_json()
    assert body["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 4, 4, 1]}]
    assert body["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}]


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("/v2/models/nope", 404, "model_not_found"),
        ("/v2/models/tab/versions/9", 404, "version_not_found"),
        ("/v2/models/tab/versions/latest", 404, "version_not_found"),
        ("/v2/models/tab/versions/3", 503, "model_not_ready"),
        ("/v2/models/nope/ready", 404, "model_not_found"),
        ("/v2/models/tab/versions/9/ready", 404, "version_not_found"),
    ],
)
def test_metadata_and_readiness_errors_use_the_envelope(
    client: FlaskClient, url: str, status: int, code: str
) -> None:
    assert_error(client.get(url), status, code)


def test_model_and_version_ready(client: FlaskClient) -> None:
    model = client.get("/v2/models/tab/ready")
    version = client.get("/v2/models/tab/versions/1/ready")

    assert (model.status_code, model.get_json()) == (200, {"name": "tab", "ready": True})
    assert (version.status_code, version.get_json()) == (200, {"name": "tab", "ready": True})


def test_failed_version_is_not_ready_with_503(client: FlaskClient) -> None:
    response = client.get("/v2/models/tab/versions/3/ready")

    assert (response.status_code, response.get_json()) == (503, {"name": "tab", "ready": False})


# -- inference ---------------------------------------------------------------------------------


def test_infer_without_a_content_type_header(client: FlaskClient) -> None:
    response = client.post("/v2/models/tab/infer", data=infer_body([[1, 2, 3], [6, 5, 4]], [2, 3]))

    assert "Content-Type" not in response.request.headers
    assert response.status_code == 200
    assert response.get_json() == {
        "model_name": "tab",
        "model_version": "2",
        "outputs": [
            {"name": "scores", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 6, 5, 4]}
        ],
    }


def test_infer_with_a_json_content_type(client: FlaskClient) -> None:
    response = client.post(
        "/v2/models/tab/infer",
        data=infer_body([1, 2, 3], [1, 3]),
        content_type="application/json",
    )

    assert response.status_code == 200


def test_infer_echoes_the_request_id(client: FlaskClient) -> None:
    response = client.post(
        "/v2/models/tab/infer",
        data=infer_body([1, 2, 3], [1, 3], id="client-42"),
        headers={"X-Request-ID": "trace-7"},
    )

    assert response.get_json()["id"] == "client-42"
    assert response.headers["X-Request-ID"] == "trace-7"


def test_infer_with_a_pinned_version(client: FlaskClient) -> None:
    response = client.post("/v2/models/tab/versions/1/infer", data=infer_body([1, 2, 3], [1, 3]))

    assert response.status_code == 200
    assert response.get_json()["model_version"] == "1"


def test_infer_outputs_filter_returns_only_the_named_outputs(
    tmp_path: Path, make_app: MakeApp
) -> None:
    fake_repo.write_version(tmp_path, "two", 1, TWO_OUTPUTS)
    client = client_as(make_app(root=tmp_path, factories={"fake": two_outputs_factory}), "admin")
    url = "/v2/models/two/infer"
    rows = [[1, 9, 3], [7, 2, 3]]

    everything = client.post(url, data=infer_body(rows, [2, 3]))
    only_best = client.post(url, data=infer_body(rows, [2, 3], outputs=[{"name": "best"}]))
    unknown = client.post(url, data=infer_body(rows, [2, 3], outputs=[{"name": "probs"}]))

    assert [o["name"] for o in everything.get_json()["outputs"]] == ["scores", "best"]
    assert only_best.get_json()["outputs"] == [
        {"name": "best", "datatype": "INT64", "shape": [2, 1], "data": [1, 0]}
    ]
    body = assert_error(unknown, 422, "invalid_input")
    assert body["details"] == {"available": ["best", "scores"]}


def test_infer_on_unknown_model_is_404(client: FlaskClient) -> None:
    response = client.post("/v2/models/nope/infer", data=infer_body([1, 2, 3], [1, 3]))

    assert_error(response, 404, "model_not_found")


def test_infer_on_a_failed_version_is_503(client: FlaskClient) -> None:
    response = client.post("/v2/models/tab/versions/3/infer", data=infer_body([1, 2, 3], [1, 3]))

    assert_error(response, 503, "model_not_ready")


def test_infer_with_the_wrong_shape_is_422_naming_the_input(client: FlaskClient) -> None:
    response = client.post("/v2/models/tab/infer", data=infer_body([1, 2, 3, 4], [1, 4]))

    body = assert_error(response, 422, "invalid_input")
    assert body["error"] == "input 'x' expects shape [-1, 3], got [1, 4]"
    assert body["details"]["input"] == "x"


def test_infer_with_the_wrong_datatype_is_422_naming_the_input(client: FlaskClient) -> None:
    response = client.post("/v2/models/tab/infer", data=infer_body([1, 2, 3], [1, 3], "INT32"))

    body = assert_error(response, 422, "invalid_input")
    assert body["error"] == "input 'x' must be FP32"


def test_infer_with_an_unknown_input_name_is_422(client: FlaskClient) -> None:
    body = json.dumps(
        {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    )

    response = client.post("/v2/models/tab/infer", data=body)

    assert assert_error(response, 422, "invalid_input")["details"]["unknown"] == ["pixels"]


def test_infer_with_a_body_that_is_not_json_is_422(client: FlaskClient) -> None:
    assert_error(client.post("/v2/models/tab/infer", data="inputs"), 422, "invalid_input")


def test_infer_body_over_max_json_bytes_is_413(make_app: MakeApp) -> None:
    client = client_as(make_app(MAX_JSON_BYTES=100), "admin")
    data = infer_body([[1.0, 2.0, 3.0]] * 20, [20, 3])

    assert_error(client.post("/v2/models/tab/infer", data=data), 413, "payload_too_large")


# -- binary tensor data extension ---------------------------------------------------------------


def test_binary_tensor_input_and_output_round_trip(client: FlaskClient) -> None:
    header = json.dumps(
        {
            "id": "bin-1",
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": 24},
                }
            ],
            "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
        }
    ).encode()
    tensor = np.asarray([[1, 2, 3], [6, 5, 4]], dtype="<f4").tobytes()

    response = client.post(
        "/v2/models/tab/versions/1/infer",
        data=header + tensor,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )

    assert response.status_code == 200, response.get_data()
    length = int(response.headers["Inference-Header-Content-Length"])
    answer = json.loads(response.data[:length])
    output = answer["outputs"][0]
    assert answer["id"] == "bin-1" and "data" not in output
    assert output["parameters"]["binary_data_size"] == 24
    values = np.frombuffer(response.data[length:], dtype="<f4").reshape(output["shape"])
    assert values.tolist() == [[1, 2, 3], [6, 5, 4]]


def test_binary_data_that_does_not_fit_the_declared_sizes_is_422(client: FlaskClient) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 3],
                    "parameters": {"binary_data_size": 12},
                }
            ]
        }
    ).encode()
    too_short = header + b"\0" * 8
    too_long = header + b"\0" * 16

    for body in (too_short, too_long):
        response = client.post(
            "/v2/models/tab/infer",
            data=body,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert_error(response, 422, "invalid_input")


def test_stats_route_reports_batching_per_version(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    manifest = fake_repo.TAB_MANIFEST.format(max_batch_size=8) + (
        "\n[batching]\nmax_batch_delay_ms = 2\nmax_queue_size = 16\n"
    )
    fake_repo.write_version(tmp_path, "tab", 1, manifest)
    client = client_as(make_app(root=tmp_path), "admin")
    for _ in range(3):
        assert (
            client.post("/api/models/tab/predict", json={"instances": [[1, 2, 3]]}).status_code
            == 200
        )

    stats = client.get("/v2/models/tab/stats").get_json()

    version = stats["versions"][0]
    assert version["batching"] == {"max_batch_delay_ms": 2.0, "max_queue_size": 16}
    assert version["stats"]["requests"] == 3 and version["stats"]["items"] == 3

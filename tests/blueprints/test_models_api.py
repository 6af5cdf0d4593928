from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable

import numpy as np
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.test import TestResponse

from tests.conftest import assert_error, client_as, png_bytes

MakeApp = Callable[..., Flask]


def digit(bright_first: bool) -> bytes:
    """A 4x4 grey PNG for ``img``: the echo runtime scores pixel 0 as 'first', pixel 1 as
    'second', so the brighter of the two wins."""
    pixels = np.zeros((4, 4), np.uint8)
    pixels[0, 0 if bright_first else 1] = 255
    return png_bytes(Image.fromarray(pixels))


FIRST, SECOND = digit(True), digit(False)


def labels(response: TestResponse) -> list[str]:
    body = response.get_json()
    return [p["label"] for p in body["predictions"]]


# -- metadata ----------------------------------------------------------------------------------


def test_list_models_shows_versions_with_state_and_failure_reason(client: FlaskClient) -> None:
    response = client.get("/api/models")

    assert response.status_code == 200
    models = {m["name"]: m for m in response.get_json()}
    assert sorted(models) == ["img", "tab"]
    tab = models["tab"]
    assert (tab["ready"], tab["description"], tab["labels"]) == (
        True,
        "three features",
        list("abc"),
    )
    assert [(v["version"], v["state"]) for v in tab["versions"]] == [
        (3, "FAILED"),
        (2, "READY"),
        (1, "READY"),
    ]
    assert "not valid TOML" in tab["versions"][0]["reason"]
    assert tab["versions"][1]["reason"] is None
    assert tab["versions"][1]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]


def test_get_model_describes_one_model(client: FlaskClient) -> None:
    response = client.get("/api/models/img")

    assert response.status_code == 200
    body = response.get_json()
    assert body["name"] == "img"
    [version] = body["versions"]
    assert version["labels"] == ["first", "second"]
    assert [s["step"] for s in version["preprocess"]] == ["decode_image", "resize", "to_array"]
    assert version["postprocess"] == {
        "output": "logits",
        "softmax": True,
        "top_k": 2,
        "threshold": None,
        "below_threshold_label": "unknown",
    }


def test_unknown_model_is_a_404_envelope(client: FlaskClient) -> None:
    body = assert_error(client.get("/api/models/nope"), 404, "model_not_found")

    assert body["details"] == {"model": "nope"}


# -- predict -----------------------------------------------------------------------------------


def test_predict_with_json_instances_answers_with_labels_and_version(client: FlaskClient) -> None:
    response = client.post(
        "/api/models/tab/predict", json={"instances": [{"a": 1, "b": 5}, {"a": 2, "b": 0, "c": 3}]}
    )

    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == "2"
    body = response.get_json()
    assert (body["model"], body["version"]) == ("tab", 2)
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert body["predictions"][0] == {
        "label": "b",
        "score": 5.0,
        "top_k": [{"label": "b", "score": 5.0}, {"label": "a", "score": 1.0}],
    }
    assert labels(response) == ["b", "c"]


def test_predict_with_json_b64_images(client: FlaskClient) -> None:
    instances = [{"b64": base64.b64encode(image).decode()} for image in (SECOND, FIRST)]

    response = client.post("/api/models/img/predict", json={"instances": instances})

    assert response.status_code == 200
    assert labels(response) == ["second", "first"]


def test_predict_with_several_uploaded_files_answers_each(client: FlaskClient) -> None:
    files = {
        "file": [(io.BytesIO(FIRST), "a.png"), (io.BytesIO(SECOND), "b.png")],
        "other": (io.BytesIO(SECOND), "c.png"),
    }

    response = client.post("/api/models/img/predict", data=files)

    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == "1"
    assert labels(response) == ["first", "second", "second"]
    assert response.get_json()["predictions"][0]["score"] > 0.5


def test_predict_with_a_raw_image_body(client: FlaskClient) -> None:
    response = client.post("/api/models/img/predict", data=SECOND, content_type="image/png")

    assert response.status_code == 200
    assert labels(response) == ["second"]


def test_predict_with_a_pinned_version(client: FlaskClient) -> None:
    response = client.post("/api/models/tab/versions/1/predict", json={"instances": [[0, 0, 1]]})

    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == "1"
    assert response.get_json()["version"] == 1
    assert labels(response) == ["c"]


def test_predict_on_a_failed_pinned_version_is_503_with_retry_after(client: FlaskClient) -> None:
    response = client.post("/api/models/tab/versions/3/predict", json={"instances": [[1, 2, 3]]})

    body = assert_error(response, 503, "model_not_ready")
    assert "version 3 is FAILED" in body["error"]
    assert response.headers["Retry-After"] == "1"


def test_predict_on_unknown_model_or_version_is_404(client: FlaskClient) -> None:
    instances = {"instances": [[1, 2, 3]]}

    assert_error(client.post("/api/models/nope/predict", json=instances), 404, "model_not_found")
    assert_error(
        client.post("/api/models/tab/versions/9/predict", json=instances),
        404,
        "version_not_found",
    )


def test_predict_with_an_unsupported_content_type_is_415(client: FlaskClient) -> None:
    response = client.post("/api/models/img/predict", data="hello", content_type="text/plain")

    body = assert_error(response, 415, "unsupported_media_type")
    assert body["details"] == {"got": "text/plain"}


def test_predict_with_a_non_image_upload_is_415(client: FlaskClient) -> None:
    files = {"file": (io.BytesIO(b"%PDF-1.7 not an image"), "doc.pdf")}

    body = assert_error(
        client.post("/api/models/img/predict", data=files), 415, "unsupported_media_type"
    )
    assert "PNG, JPEG or WebP" in body["error"]


def test_predict_with_the_wrong_shape_is_422_naming_the_input(client: FlaskClient) -> None:
    response = client.post("/api/models/tab/predict", json={"instances": [[1, 2, 3], [1, 2]]})

    body = assert_error(response, 422, "invalid_input")
    assert body["error"] == "item 1: input 'x' expects shape [3] per item, got [2]"
    assert body["details"] == {"item": 1, "input": "x", "expected": [3], "got": [2]}


def test_predict_with_an_image_for_a_tabular_model_is_422(client: FlaskClient) -> None:
    response = client.post("/api/models/tab/predict", data=FIRST, content_type="image/png")

    body = assert_error(response, 422, "invalid_input")
    assert "this model takes named features" in body["error"]


def test_predict_refuses_nan_and_infinity_in_json(client: FlaskClient) -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        response = client.post(
            "/api/models/tab/predict",
            data=f'{{"instances": [[{constant}, 1, 2]]}}',
            content_type="application/json",
        )

        body = assert_error(response, 422, "invalid_input")
        assert constant in body["error"]


def test_predict_refuses_malformed_json_bodies(client: FlaskClient) -> None:
    cases = {
        "{not json": "not valid JSON",
        '{"rows": [[1, 2, 3]]}': '{"instances": [...]}',
        '{"instances": []}': "no items to predict",
    }
    for raw, message in cases.items():
        response = client.post("/api/models/tab/predict", data=raw, content_type="application/json")

        assert message in assert_error(response, 422, "invalid_input")["error"]


def test_predict_refuses_empty_uploads(client: FlaskClient) -> None:
    empty_file = client.post("/api/models/img/predict", data={"file": (io.BytesIO(b""), "a.png")})
    no_file = client.post(
        "/api/models/img/predict", data={"field": "value"}, content_type="multipart/form-data"
    )
    empty_body = client.post("/api/models/img/predict", data=b"", content_type="image/png")

    assert "'a.png' is empty" in assert_error(empty_file, 422, "invalid_input")["error"]
    assert "holds no file" in assert_error(no_file, 422, "invalid_input")["error"]
    assert "body is empty" in assert_error(empty_body, 422, "invalid_input")["error"]


def test_predict_refuses_too_many_items(make_app: MakeApp) -> None:
    client = client_as(make_app(MAX_ITEMS_PER_REQUEST=2), "admin")

    response = client.post("/api/models/tab/predict", json={"instances": [[1, 2, 3]] * 3})

    assert "at most 2" in assert_error(response, 422, "invalid_input")["error"]


def test_body_over_max_content_length_is_413(make_app: MakeApp) -> None:
    client = client_as(make_app(MAX_CONTENT_LENGTH=1000), "admin")
    big = b"\x89PNG" + bytes(2000)

    upload = client.post("/api/models/img/predict", data={"file": (io.BytesIO(big), "a.png")})
    raw = client.post("/api/models/img/predict", data=big, content_type="image/png")

    assert_error(upload, 413, "payload_too_large")
    assert_error(raw, 413, "payload_too_large")


def test_json_over_max_json_bytes_is_413(make_app: MakeApp) -> None:
    client = client_as(make_app(MAX_JSON_BYTES=200), "admin")
    body = json.dumps({"instances": [[1.0, 2.0, 3.0]] * 20})
    assert len(body) > 200

    response = client.post("/api/models/tab/predict", data=body, content_type="application/json")

    assert "limited to 200 bytes" in assert_error(response, 413, "payload_too_large")["error"]

"""The real bundled models through the real runtimes and pipelines (TensorFlow and TFLite)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from serving.registry import VersionState
from serving.service import InferenceService
from tests.conftest import BUNDLED_MODELS, client_as, png_bytes
from training import shapes_data

pytestmark = pytest.mark.slow

IRIS_SAMPLES = [
    ({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}, "setosa"),
    (
        {"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5},
        "versicolor",
    ),
    (
        {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3},
        "virginica",
    ),
]


@pytest.fixture(scope="module")
def service(bundled_app: Flask) -> InferenceService:
    svc: InferenceService = bundled_app.extensions["modelgate.service"]
    return svc


@pytest.fixture(scope="module")
def digits_holdout() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(BUNDLED_MODELS / "digits" / "holdout.npz")
    return data["x"], data["y"]


def digit_upload(pixels: np.ndarray, *, dark_on_light: bool, size: int = 96) -> bytes:
    """A holdout digit as a user would upload it: larger, grey levels, either polarity."""
    grey = (pixels.reshape(8, 8) * 255).astype(np.uint8)
    if dark_on_light:
        grey = 255 - grey
    image = Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.NEAREST)
    margin = Image.new("L", (size + 40, size + 40), 255 if dark_on_light else 0)
    margin.paste(image, (20, 20))
    return png_bytes(margin.convert("RGB"))


def test_every_bundled_version_is_ready(service: InferenceService) -> None:
    versions = [v for m in service.models() for v in m.versions.values()]
    assert {(v.model, v.version) for v in versions} >= {
        ("digits", 1),
        ("digits", 2),
        ("shapes", 1),
        ("shapes", 2),
        ("iris", 1),
        ("digits", 3),
        ("shapes", 3),
    }
    assert all(v.state is VersionState.READY for v in versions), [
        (v.model, v.version, v.reason) for v in versions
    ]


def test_manifest_artifact_bytes_match_the_files(service: InferenceService) -> None:
    for model in service.models():
        for version in model.versions.values():
            assert version.spec is not None
            artifact: Path = version.spec.artifact
            size = (
                sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file())
                if artifact.is_dir()
                else artifact.stat().st_size
            )
            assert version.spec.provenance["artifact_bytes"] == size
            assert size < 3_000_000


# Version 3 of digits and shapes: int8, made from version 1 by `flask models optimize`.
@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("dark_on_light", [True, False])
def test_uploaded_holdout_digits_predict_their_labels(
    service: InferenceService,
    digits_holdout: tuple[np.ndarray, np.ndarray],
    version: int,
    dark_on_light: bool,
) -> None:
    x, y = digits_holdout
    items = [digit_upload(x[i], dark_on_light=dark_on_light) for i in range(120)]
    result = service.predict("digits", items, version)
    predicted = [p.label for p in result.predictions]
    accuracy = np.mean([p == str(t) for p, t in zip(predicted, y[:120], strict=True)])
    # The upload path re-derives the 8x8 grid from a re-drawn picture, so it may lose a little
    # against the holdout accuracy in the manifest, but not much.
    assert accuracy >= 0.9, accuracy


@pytest.mark.parametrize("version", [1, 2, 3])
def test_generated_shapes_predict_their_class(service: InferenceService, version: int) -> None:
    rng = np.random.default_rng(20261125)
    classes = [i % len(shapes_data.CLASSES) for i in range(60)]
    items = [png_bytes(shapes_data.render(c, rng)) for c in classes]
    result = service.predict("shapes", items, version)
    correct = [
        p.label == shapes_data.CLASSES[c] for p, c in zip(result.predictions, classes, strict=True)
    ]
    assert np.mean(correct) >= 0.9


def test_a_large_jpeg_photo_of_a_shape_is_recognised(service: InferenceService) -> None:
    rng = np.random.default_rng(7)
    image = shapes_data.render(shapes_data.CLASSES.index("star"), rng, size=64)
    big = image.resize((640, 480), Image.Resampling.BICUBIC)
    result = service.predict("shapes", [png_bytes(big, "JPEG")])
    assert result.predictions[0].label == "star"


@pytest.mark.parametrize(("features", "species"), IRIS_SAMPLES)
def test_iris_named_features_predict_the_species(
    service: InferenceService, features: dict[str, float], species: str
) -> None:
    result = service.predict("iris", [features])
    assert result.predictions[0].label == species


def test_v2_tensor_of_a_holdout_digit_argmax_is_its_label(
    bundled_app: Flask, digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits_holdout
    client = client_as(bundled_app, "admin")
    body = {
        "inputs": [
            {
                "name": "pixels",
                "datatype": "FP32",
                "shape": [4, 8, 8, 1],
                "data": x[:4].reshape(-1).tolist(),
            }
        ]
    }
    response = client.post("/v2/models/digits/versions/2/infer", json=body)
    assert response.status_code == 200, response.json
    output = response.json["outputs"][0]
    logits = np.asarray(output["data"]).reshape(output["shape"])
    assert logits.argmax(axis=1).tolist() == y[:4].tolist()


def test_the_bundled_ensembles_average_and_compare_digits(
    bundled_client: FlaskClient, digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits_holdout
    upload = {"file": (io.BytesIO(digit_upload(x[0], dark_on_light=True)), "d.png")}
    listed = {m["name"]: m for m in bundled_client.get("/api/models").get_json()}
    assert listed["digits-ensemble"]["kind"] == "ensemble"
    assert listed["digits-ensemble"]["ready"] and listed["digits-compare"]["ready"]

    averaged = bundled_client.post(
        "/api/models/digits-ensemble/predict", data=upload, content_type="multipart/form-data"
    ).get_json()
    upload = {"file": (io.BytesIO(digit_upload(x[0], dark_on_light=True)), "d.png")}
    compared = bundled_client.post(
        "/api/models/digits-compare/predict", data=upload, content_type="multipart/form-data"
    ).get_json()

    assert averaged["predictions"][0]["label"] == str(y[0])
    assert [m["version"] for m in averaged["members"]] == [1, 2]
    assert [m["version"] for m in compared["members"]] == [1, 2, 3]
    assert compared["combine"] == "all"


def test_the_bundled_ensembles_answer_v2_tensors(
    bundled_client: FlaskClient, digits_holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits_holdout
    tensor = {
        "name": "pixels",
        "datatype": "FP32",
        "shape": [6, 8, 8, 1],
        "data": x[:6].reshape(-1).tolist(),
    }
    metadata = bundled_client.get("/v2/models/digits-ensemble").get_json()
    assert metadata["platform"] == "ensemble"
    assert [i["name"] for i in metadata["inputs"]] == ["pixels"]
    assert bundled_client.get("/v2/models/digits-compare/ready").status_code == 200

    averaged = bundled_client.post("/v2/models/digits-ensemble/infer", json={"inputs": [tensor]})
    compared = bundled_client.post("/v2/models/digits-compare/infer", json={"inputs": [tensor]})

    assert averaged.status_code == 200, averaged.get_json()
    outputs = {o["name"]: o for o in averaged.get_json()["outputs"]}
    assert outputs["label"]["data"] == [str(label) for label in y[:6]]
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(6, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert "model_version" not in averaged.get_json()
    assert averaged.headers["X-Route-Reason"] == "ensemble"
    side_by_side = {o["name"]: o["shape"] for o in compared.get_json()["outputs"]}
    assert side_by_side == {
        "label": [6],
        "score": [6],
        **{f"digits_v{v}": [6, 10] for v in (1, 2, 3)},
    }

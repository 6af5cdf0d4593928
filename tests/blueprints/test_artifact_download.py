"""Downloading a version's artifact, with its SHA-256, for on-device use."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import BUNDLED_MODELS, assert_error, client_as


def test_a_single_file_artifact_downloads_with_its_digest(client: FlaskClient, repo: Path) -> None:
    response = client.get("/api/models/tab/versions/1/artifact")

    assert response.status_code == 200
    assert response.data == (repo / "tab" / "1" / "model.bin").read_bytes()
    digest = hashlib.sha256(response.data).digest()
    assert response.headers["X-Artifact-SHA256"] == digest.hex()
    assert response.headers["Repr-Digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
    assert 'filename="tab-v1.bin"' in response.headers["Content-Disposition"]


def test_unknown_versions_and_models_are_404(client: FlaskClient) -> None:
    assert_error(client.get("/api/models/tab/versions/9/artifact"), 404, "version_not_found")
    assert_error(client.get("/api/models/nope/versions/1/artifact"), 404, "model_not_found")


def test_the_model_scope_applies(app: Flask) -> None:
    admin = client_as(app, "admin")
    key = admin.post(
        "/api/keys", json={"name": "img-only", "role": "predictor", "scopes": ["infer:img"]}
    ).get_json()["key"]
    assert (
        app.test_client().get("/api/models/img/versions/1/artifact", headers={"X-API-Key": key})
    ).status_code == 200
    assert_error(
        app.test_client().get("/api/models/tab/versions/1/artifact", headers={"X-API-Key": key}),
        403,
        "forbidden",
    )


def test_a_savedmodel_downloads_as_a_zip_whose_digest_never_changes(
    bundled_client: FlaskClient,
) -> None:
    first = bundled_client.get("/api/models/digits/versions/1/artifact")
    second = bundled_client.get("/api/models/digits/versions/1/artifact")

    assert first.status_code == 200 and first.mimetype == "application/zip"
    assert first.headers["X-Artifact-SHA256"] == second.headers["X-Artifact-SHA256"]
    names = zipfile.ZipFile(io.BytesIO(first.data)).namelist()
    assert "saved_model/saved_model.pb" in names
    tflite = bundled_client.get("/api/models/digits/versions/2/artifact")
    assert tflite.data == (BUNDLED_MODELS / "digits" / "2" / "model.tflite").read_bytes()

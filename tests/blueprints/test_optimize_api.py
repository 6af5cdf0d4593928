"""Optimizing through the API: an admin's background job that publishes a version or refuses it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from jobs.runner import JobRunner
from serving.modelimport import import_model
from serving.runtimes import default_factories
from tests.conftest import assert_error, client_as
from tests.toy_model import Toy


def run_jobs(app: Flask) -> None:
    runner: JobRunner = app.extensions["modelgate.job_runner"]
    while runner.run_once():
        pass


def optimize(client: FlaskClient, model: str = "toy", **body: Any) -> Any:
    return client.post(f"/api/models/{model}/optimize", json=body)


def test_bad_requests_are_refused_before_a_job_exists(client: FlaskClient) -> None:
    assert_error(optimize(client, from_version=1, mode="int4"), 422, "invalid_input")
    assert_error(optimize(client, "tab", from_version=9, mode="int8"), 404, "version_not_found")
    assert_error(optimize(client, "nope", from_version=1, mode="int8"), 404, "model_not_found")
    assert_error(
        optimize(client, "tab", from_version=1, mode="int8", max_accuracy_drop=2),
        422,
        "invalid_input",
    )
    assert client.get("/api/jobs").get_json() == []


def test_a_source_that_cannot_be_optimized_fails_the_job_and_writes_nothing(
    app: Flask, client: FlaskClient, repo: Path
) -> None:
    before = sorted(p.name for p in (repo / "tab").iterdir())
    job = optimize(client, "tab", from_version=1, mode="float16").get_json()
    assert (job["kind"], job["state"]) == ("optimize", "queued")

    run_jobs(app)

    ended = client.get(f"/api/jobs/{job['id']}").get_json()
    assert ended["state"] == "failed"
    assert "savedmodel" in ended["error"].lower() or "SavedModel" in ended["error"]
    assert ended["result"]["code"]
    assert sorted(p.name for p in (repo / "tab").iterdir()) == before


@pytest.mark.slow
def test_an_int8_job_publishes_a_version_and_starts_its_canary_a_damaged_one_is_refused(
    toy: Toy, tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    root = Path(shutil.copytree(toy.root, tmp_path / "toy-models"))
    import_model(root, toy.damaged, "toy")  # version 2: the same model, weights damaged
    app = make_app(root, default_factories())
    admin = client_as(app, "admin")

    good = optimize(admin, from_version=1, mode="int8", canary_percent=10).get_json()
    bad = optimize(admin, from_version=2, mode="int8").get_json()
    run_jobs(app)

    published = admin.get(f"/api/jobs/{good['id']}").get_json()
    assert published["state"] == "succeeded", published
    assert published["progress"]["percent"] == 100.0
    version = published["result"]["version"]
    assert published["result"]["mode"] == "int8"
    assert published["result"]["ops_remaining"] == []
    assert published["result"]["accuracy_drop"] <= 0.01
    model = admin.get("/api/models/toy").get_json()
    assert {v["version"]: v["state"] for v in model["versions"]}[version] == "READY"
    deployment = admin.get("/api/models/toy/deployment").get_json()
    assert deployment["weights"] == {"1": 90.0, str(version): 10.0}
    audit = admin.get("/api/audit?model=toy").get_json()
    assert audit[0]["action"] == "canary" and audit[0]["actor"].startswith("job:")

    refused = admin.get(f"/api/jobs/{bad['id']}").get_json()
    assert refused["state"] == "failed"
    assert "percentage points of holdout accuracy" in refused["error"]
    assert refused["result"]["code"] == "accuracy_gate_failed"
    assert sorted(p.name for p in (root / "toy").iterdir() if p.name.isdigit()) == [
        "1",
        "2",
        str(version),
    ]

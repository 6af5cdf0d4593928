"""Batch jobs over HTTP: submit, progress, results as JSONL and CSV, ownership, cancel, limits."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from jobs.runner import JobRunner
from tests.conftest import assert_error, client_as, png_bytes
from tests.serving.test_jobs_input import zip_of

LINES = [
    {"a": 1, "b": 5},
    {"a": 9, "b": 1},
    {"a": 0, "b": 0, "c": 7},
    {"nope": 1},
    {"a": 0, "b": 2},
]


def jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def submit(client: FlaskClient, data: bytes, filename: str = "in.jsonl", **fields: str) -> Any:
    form: dict[str, Any] = {"model": "tab", **fields, "file": (io.BytesIO(data), filename)}
    return client.post("/api/jobs", data=form, content_type="multipart/form-data")


def runner_of(app: Flask) -> JobRunner:
    runner: JobRunner = app.extensions["modelgate.job_runner"]
    return runner


def test_a_jsonl_job_runs_in_the_background_and_its_results_download(
    app: Flask, client: FlaskClient
) -> None:
    response = submit(client, jsonl(LINES), version="2")
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert response.headers["Location"] == f"/api/jobs/{job['id']}"
    assert (job["state"], job["version"], job["progress"]["total"]) == ("queued", 2, 5)

    assert runner_of(app).run_once() is True

    finished = client.get(f"/api/jobs/{job['id']}").get_json()
    assert finished["state"] == "succeeded"
    assert finished["progress"] == {"total": 5, "done": 4, "failed": 1, "percent": 100.0}
    lines = client.get(f"/api/jobs/{job['id']}/results").get_data(as_text=True).splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r.get("label") for r in rows] == ["b", "a", "c", None, "b"]
    assert "nope" in rows[3]["error"] and rows[3]["name"] == "line 4"
    csv = client.get(f"/api/jobs/{job['id']}/results?format=csv")
    assert csv.mimetype == "text/csv"
    assert csv.headers["Content-Disposition"] == f'attachment; filename="job-{job["id"]}.csv"'
    assert csv.get_data(as_text=True).splitlines()[1].startswith("0,line 1,2,b,5.0,b:5.0 a:1.0,")


def test_a_zip_of_images_runs_through_the_image_pipeline(app: Flask, client: FlaskClient) -> None:
    dark, light = png_bytes(Image.new("L", (8, 8), 0)), png_bytes(Image.new("L", (8, 8), 255))
    data = zip_of({"dark.png": dark, "light.png": light, "broken.png": b"not an image"})
    job = submit(client, data, "photos.zip", model="img").get_json()
    assert job["input"] == {"kind": "zip", "name": "photos.zip", "bytes": len(data)}

    runner_of(app).run_once()

    results = client.get(f"/api/jobs/{job['id']}/results").get_data(as_text=True)
    rows = [json.loads(line) for line in results.splitlines()]
    assert [r["name"] for r in rows] == ["dark.png", "light.png", "broken.png"]
    assert rows[0]["label"] in ("first", "second") and "error" in rows[2]
    assert client.get(f"/api/jobs/{job['id']}").get_json()["progress"]["failed"] == 1


def test_jobs_belong_to_their_creator(app: Flask, client: FlaskClient) -> None:
    job = submit(client, jsonl(LINES[:1])).get_json()
    other = client_as(app, "predictor")

    assert_error(other.get(f"/api/jobs/{job['id']}"), 404, "job_not_found")
    assert_error(other.get(f"/api/jobs/{job['id']}/results"), 404, "job_not_found")
    assert_error(other.delete(f"/api/jobs/{job['id']}"), 404, "job_not_found")
    assert other.get("/api/jobs").get_json() == []
    assert [j["id"] for j in client.get("/api/jobs").get_json()] == [job["id"]]
    assert_error(client_as(app, "viewer").get("/api/jobs"), 403, "forbidden")


def test_a_cancelled_job_stops_and_keeps_what_it_answered(app: Flask, client: FlaskClient) -> None:
    job = submit(client, jsonl(LINES), version="2").get_json()
    runner = runner_of(app)
    runner.run_once(max_chunks=1)  # two items (v2 batches by 2), then the process "stops"

    cancelled = client.delete(f"/api/jobs/{job['id']}")
    assert cancelled.get_json()["state"] == "cancelled"
    assert_error(client.delete(f"/api/jobs/{job['id']}"), 409, "job_finished")
    assert runner.run_once() is False  # nothing to claim: a cancelled job never resumes
    results = client.get(f"/api/jobs/{job['id']}/results")
    assert results.headers["X-Job-State"] == "cancelled"
    assert len(results.get_data(as_text=True).splitlines()) == 2


@pytest.mark.parametrize(
    ("data", "filename", "fields", "status", "code"),
    [
        (b"", "in.csv", {}, 422, "invalid_input"),
        (b"PK broken", "in.zip", {}, 422, "invalid_input"),
        (b'{"a": 1}\n', "in.jsonl", {"model": "nope"}, 404, "model_not_found"),
        (b'{"a": 1}\n', "in.jsonl", {"version": "9"}, 404, "version_not_found"),
        (b'{"a": 1}\n', "in.jsonl", {"version": "x"}, 422, "invalid_input"),
    ],
)
def test_bad_submissions_are_refused_before_anything_is_stored(
    client: FlaskClient,
    data: bytes,
    filename: str,
    fields: dict[str, str],
    status: int,
    code: str,
) -> None:
    assert_error(submit(client, data, filename, **fields), status, code)
    assert client.get("/api/jobs").get_json() == []


def test_size_and_count_limits(make_app: Callable[..., Flask]) -> None:
    app = make_app(JOB_MAX_UPLOAD_BYTES=2000, JOB_MAX_ITEMS=3, JOB_MAX_ACTIVE_PER_OWNER=1)
    client = client_as(app, "admin")
    assert_error(submit(client, b" " * 3000), 413, "payload_too_large")
    assert_error(submit(client, jsonl(LINES)), 413, "payload_too_large")
    assert submit(client, jsonl(LINES[:2])).status_code == 202
    assert_error(submit(client, jsonl(LINES[:2])), 429, "too_many_jobs")


def test_a_key_without_the_models_scope_cannot_submit(app: Flask) -> None:
    scoped = client_as(app, "admin")
    key = scoped.post(
        "/api/keys", json={"name": "img-only", "role": "predictor", "scopes": ["infer:img"]}
    ).get_json()
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = key["key"]
    assert_error(submit(client, jsonl(LINES[:1])), 403, "forbidden")


def test_times_are_sent_with_their_utc_offset(client: FlaskClient) -> None:
    job = submit(client, jsonl(LINES[:1])).get_json()
    listed = client.get("/api/jobs").get_json()[0]  # read back from the database
    assert job["created_at"].endswith("+00:00")
    assert listed["created_at"].endswith("+00:00")
    assert listed["started_at"] is None

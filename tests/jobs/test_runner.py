"""The job runner: resumes after a restart without answering an item twice, gives way to
interactive requests, and never lets two processes work one job."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from extensions import db
from jobs import store
from jobs.models import JobResult
from jobs.runner import JobRunner
from serving.jobs import JobLimits
from serving.manifest import VersionSpec
from serving.registry import VersionState
from serving.runtimes.fake import FakeRuntime, echo
from serving.service import InferenceService
from serving.settings import ServingSettings
from tests.conftest import client_as

ITEMS = [{"a": float(i), "b": 1.0} for i in range(7)]  # v2 batches by 2: four chunks


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def runner_for(app: Flask, clock: Clock) -> JobRunner:
    return JobRunner(
        app,
        app.extensions["modelgate.service"],
        interval_seconds=1,
        lease_seconds=15,
        limits=JobLimits(),
        clock=clock,
    )


def submit(app: Flask) -> str:
    data = "".join(json.dumps(i) + "\n" for i in ITEMS).encode()
    response = client_as(app, "admin").post(
        "/api/jobs",
        data={"model": "tab", "version": "2", "file": (io.BytesIO(data), "in.jsonl")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["id"]
    return job_id


def stored_indexes(app: Flask, job_id: str) -> list[int]:
    with app.app_context():
        return list(
            db.session.scalars(
                db.select(JobResult.index).where(JobResult.job_id == job_id).order_by("index")
            )
        )


def test_a_job_resumes_after_a_restart_from_the_first_unanswered_item(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path}/state.db"
    first = make_app(SQLALCHEMY_DATABASE_URI=database)
    job_id = submit(first)
    clock = Clock()
    assert runner_for(first, clock).run_once(max_chunks=1)  # then the process dies
    assert stored_indexes(first, job_id) == [0, 1]

    restarted = make_app(SQLALCHEMY_DATABASE_URI=database)
    runner = runner_for(restarted, clock)
    assert runner.run_once() is False  # the dead process's lease has not run out yet
    clock.now += 16
    assert runner.run_once() is True

    assert stored_indexes(restarted, job_id) == list(range(7))
    job = client_as(restarted, "admin").get(f"/api/jobs/{job_id}").get_json()
    assert (job["state"], job["progress"]["done"], job["progress"]["failed"]) == (
        "succeeded",
        7,
        0,
    )
    # Items answered before the restart were not run again.
    runtime = restarted.extensions["modelgate.service"].registry.resolve("tab", 2).runtime
    assert runtime.batch_sizes[-3:] == [2, 2, 1]


def test_a_process_that_lost_its_lease_stores_nothing_more(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/state.db")
    job_id = submit(app)
    clock = Clock()
    with app.app_context():
        assert store.claim("slow", clock(), 15) == job_id
        clock.now += 16
        assert store.claim("fast", clock(), 15) == job_id
        assert store.claim("third", clock(), 15) is None
        assert store.finish(job_id, "slow", store.SUCCEEDED) is False
        assert store.finish(job_id, "fast", store.SUCCEEDED) is True


def test_background_work_waits_for_interactive_calls(repo: Path) -> None:
    release = threading.Event()
    order: list[str] = []

    def blocking(spec: VersionSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if threading.current_thread().name == "interactive":
            release.wait(5)
        order.append(threading.current_thread().name)
        return echo(spec, inputs)

    service = InferenceService(
        ServingSettings(model_root=repo, load_in_background=False),
        {"fake": lambda spec, settings: FakeRuntime(spec, blocking)},
    )
    service.start()
    order.clear()  # the warm-up calls at load
    interactive = threading.Thread(
        target=service.predict, args=("tab", [{"a": 1, "b": 2}]), name="interactive"
    )
    background = threading.Thread(
        target=service.predict_background,
        args=("tab", 1, [{"a": 3, "b": 1}]),
        kwargs={"max_wait_seconds": 5},
        name="background",
    )
    interactive.start()
    time.sleep(0.05)
    background.start()
    time.sleep(0.2)
    assert order == []  # the job did not run while the interactive call was under way
    release.set()
    interactive.join(5)
    background.join(5)
    assert order == ["interactive", "background"]


def test_background_answers_keep_a_bad_item_to_itself(service: InferenceService) -> None:
    answers = service.predict_background("tab", 1, [{"a": 1, "b": 2}, {"x": 1}, {"a": 5, "b": 0}])
    assert [getattr(a, "label", None) for a in answers] == ["b", None, "a"]
    assert "x" in str(answers[1])


def test_background_work_waits_for_a_prediction_request_still_being_parsed(app: Flask) -> None:
    service: InferenceService = app.extensions["modelgate.service"]
    parsing = threading.Event()
    release = threading.Event()

    @app.before_request
    def slow_parse() -> None:  # after the interactive count, before any runtime call
        parsing.set()
        release.wait(5)

    client = client_as(app, "admin")
    request = threading.Thread(
        target=client.post,
        args=("/api/models/tab/predict",),
        kwargs={"json": {"instances": [{"a": 1, "b": 0}]}},
    )
    request.start()
    assert parsing.wait(5)
    waited = time.perf_counter()
    assert service.wait_idle(0.2) is False
    assert time.perf_counter() - waited >= 0.19
    release.set()
    request.join(5)
    assert service.wait_idle(1) is True


def test_a_job_on_a_loading_version_waits_without_holding_up_the_queue(app: Flask) -> None:
    service: InferenceService = app.extensions["modelgate.service"]
    waiting = submit(app)
    version = service.registry.model("tab").versions[2]
    version.state = VersionState.LOADING  # as in a worker that is still starting
    data = b'{"a": 1, "b": 0}\n'
    other = (
        client_as(app, "admin")
        .post(
            "/api/jobs",
            data={"model": "tab", "version": "1", "file": (io.BytesIO(data), "in.jsonl")},
            content_type="multipart/form-data",
        )
        .get_json()["id"]
    )
    runner = runner_for(app, Clock())

    assert runner.run_once() is False  # handed back, and the loop will pause
    assert runner.run_once() is True  # the next job in line runs meanwhile
    states = {j["id"]: j["state"] for j in client_as(app, "admin").get("/api/jobs").get_json()}
    assert states == {waiting: "queued", other: "succeeded"}


def test_a_job_on_a_failed_version_fails_with_the_reason(app: Flask) -> None:
    job_id = submit(app)
    version = app.extensions["modelgate.service"].registry.model("tab").versions[2]
    version.fail("the artifact is corrupt")

    assert runner_for(app, Clock()).run_once() is True

    job = client_as(app, "admin").get(f"/api/jobs/{job_id}").get_json()
    assert job["state"] == "failed" and "the artifact is corrupt" in job["error"]


def test_an_unexpected_error_ends_the_job_instead_of_retrying_it_forever(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(app)
    service = app.extensions["modelgate.service"]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service, "predict_background", broken)
    runner = runner_for(app, Clock())
    assert runner.run_once() is True
    assert runner.run_once() is False  # nothing left to claim

    job = client_as(app, "admin").get(f"/api/jobs/{job_id}").get_json()
    assert job["state"] == "failed" and "RuntimeError" in job["error"]
    assert "disk on fire" not in job["error"]  # internals stay in the server log


def test_one_item_the_model_answers_with_nan_fails_alone(repo: Path) -> None:
    def nan_for_negative(
        spec: VersionSpec, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        out = echo(spec, inputs)
        name = spec.outputs[0].name
        out[name][inputs["x"][:, 0] < 0] = np.nan
        return out

    service = InferenceService(
        ServingSettings(model_root=repo, load_in_background=False),
        {"fake": lambda spec, settings: FakeRuntime(spec, nan_for_negative)},
    )
    service.start()

    answers = service.predict_background(
        "tab", 1, [{"a": 1, "b": 2}, {"a": -1, "b": 0}, {"a": 5, "b": 0}]
    )

    assert [getattr(a, "label", None) for a in answers] == ["b", None, "a"]
    assert "NaN" in str(answers[1])

"""The optimize task's canary step: the new version exists whatever the canary step says."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from jobs import store
from jobs.tasks import _start_canary
from serving.service import InferenceService


def test_a_version_that_is_not_ready_gets_no_canary_and_says_why(app: Flask, repo: Path) -> None:
    service: InferenceService = app.extensions["modelgate.service"]
    with app.app_context():
        job = store.create_task(owner="user:1", kind="optimize", model="tab", version=1, params={})
        answer = _start_canary(service, repo, job, 3, 10)
    assert answer == {"percent": 10, "error": answer["error"]}
    assert "version 3 is not READY here" in answer["error"]


def test_a_refused_canary_is_reported_beside_the_version(app: Flask, repo: Path) -> None:
    service: InferenceService = app.extensions["modelgate.service"]
    with app.app_context():
        job = store.create_task(owner="user:1", kind="optimize", model="tab", version=1, params={})
        # This repository gives tab no stable label, and a canary needs one.
        answer = _start_canary(service, repo, job, 2, 10)
    assert answer == {"percent": 10, "error": "set a stable version (promote) before a canary"}

"""A batch job on the real server survives the server being killed half-way."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import BUNDLED_MODELS
from tests.security.servers import Server, prepare_database, sign_in, start_servers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ITEMS = 10_000


def job_state(server: Server, token: str, job_id: str) -> dict[str, object]:
    response = requests.get(
        server.url(f"/api/jobs/{job_id}"), headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    state: dict[str, object] = response.json()
    return state


def test_a_job_killed_half_way_resumes_after_the_restart_and_answers_each_item_once(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path / 'state.db'}"
    prepare_database(database)
    settings = {
        "SQLALCHEMY_DATABASE_URI": database,
        "JWT_SECRET_KEY": "e2e-job-restart-secret-0123456789abcdef",
        "JOB_LEASE_SECONDS": "2",
        "JOB_POLL_INTERVAL_SECONDS": "0.2",
    }
    holdout = np.load(BUNDLED_MODELS / "digits" / "holdout.npz")
    x, y = holdout["x"], holdout["y"]
    rows = [x[i % len(x)].tolist() for i in range(ITEMS)]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()

    (server,) = start_servers(tmp_path, settings)
    try:
        token = str(sign_in(server, "predictor")["access_token"])
        submitted = requests.post(
            server.url("/api/jobs"),
            headers={"Authorization": f"Bearer {token}"},
            data={"model": "digits", "version": "1"},
            files={"file": ("holdout.jsonl", body, "application/x-ndjson")},
            timeout=30,
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 60
        while job_state(server, token, job_id)["progress"]["done"] == 0:  # type: ignore[index]
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        os.killpg(server.process.pid, signal.SIGKILL)  # no clean shutdown: a crash
        server.process.wait(10)
    finally:
        server.stop()

    (restarted,) = start_servers(tmp_path, settings)
    try:
        token = str(sign_in(restarted, "predictor")["access_token"])
        before = job_state(restarted, token, job_id)
        answered_before = before["progress"]["done"]  # type: ignore[index]
        assert 0 < answered_before < ITEMS, before
        deadline = time.monotonic() + 120
        while (state := job_state(restarted, token, job_id))["state"] != "succeeded":
            assert state["state"] in ("queued", "running"), state
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        results = requests.get(
            restarted.url(f"/api/jobs/{job_id}/results"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
    finally:
        restarted.stop()

    answers = [json.loads(line) for line in results.text.splitlines()]
    assert [a["index"] for a in answers] == list(range(ITEMS))
    assert state["progress"] == {"total": ITEMS, "done": ITEMS, "failed": 0, "percent": 100.0}
    accuracy = np.mean([a["label"] == str(y[i % len(y)]) for i, a in enumerate(answers)])
    assert accuracy > 0.95

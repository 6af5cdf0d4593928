"""Batch jobs against interactive traffic: does a job stay out of the way, and how fast is it?

Three phases on one gunicorn server (2 workers, a throwaway SQLite database, the bundled
digits model), all on version 1 (SavedModel):

1. interactive only: N clients send one-item v2 infer requests back-to-back;
2. job only: a JSONL job of M holdout digits runs with no other traffic;
3. both: the same job again while the same clients run.

Printed: interactive requests/s and p50/p99 latency, and job items/s, per phase; the ratios
of phase 3 to phases 1 and 2 are the figures to compare (absolute numbers drift with the
machine, and the clients share its 2 cores).

    .venv/bin/python bench/jobs.py [--clients 8] [--items 5000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.credentials import auth_headers, prepare_database, server_env  # noqa: E402
from bench.loadgen import HOST, GunicornServer, free_port, percentiles_ms  # noqa: E402


def holdout_rows(count: int) -> list[list[float]]:
    x = np.load(ROOT / "models" / "digits" / "holdout.npz")["x"]
    return [x[i % len(x)].reshape(8, 8, 1).tolist() for i in range(count)]


class Interactive:
    """Clients sending one-item v2 infer requests back-to-back until stopped."""

    def __init__(self, port: int, headers: dict[str, str], clients: int) -> None:
        row = holdout_rows(1)[0]
        self.body = json.dumps(
            {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 8, 8, 1], "data": row}]}
        ).encode()
        self.port, self.headers = port, {"Content-Type": "application/json", **headers}
        self.latencies: list[float] = []
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        while not self._stop.is_set():
            sent = time.perf_counter()
            try:
                conn.request("POST", "/v2/models/digits/versions/1/infer", self.body, self.headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                ok = False
            with self._lock:
                if ok:
                    self.latencies.append(time.perf_counter() - sent)
                else:
                    self.errors += 1
        conn.close()

    def run_for(self, seconds: float) -> float:
        started = time.perf_counter()
        for thread in self._threads:
            thread.start()
        time.sleep(seconds)
        self._stop.set()
        for thread in self._threads:
            thread.join(35)
        return time.perf_counter() - started


def request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"", **extra: str
) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        conn.request(method, path, body or None, {**headers, **extra})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, json.loads(raw) if raw else {}


def submit_job(port: int, headers: dict[str, str], items: int) -> str:
    boundary = uuid.uuid4().hex
    lines = "".join(json.dumps(r) + "\n" for r in holdout_rows(items)).encode()
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ndigits\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.jsonl"\r\n'
            "Content-Type: application/x-ndjson\r\n\r\n"
        ).encode()
        + lines
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, answer = request(
        port,
        "POST",
        "/api/jobs",
        headers,
        body,
        **{"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    if status != 202:
        raise RuntimeError(f"submitting the job failed: {status} {answer}")
    return str(answer["id"])


def job_progress(port: int, headers: dict[str, str], job_id: str) -> tuple[str, int]:
    _, answer = request(port, "GET", f"/api/jobs/{job_id}", headers)
    progress = answer["progress"]
    assert isinstance(progress, dict)
    return str(answer["state"]), int(progress["done"]) + int(progress["failed"])


def wait_started(port: int, headers: dict[str, str], job_id: str) -> None:
    deadline = time.monotonic() + 60
    while job_progress(port, headers, job_id)[1] == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the job did not start within 60 s")
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="modelgate-jobs-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "models" / "digits", work / "models" / "digits")
        env = {
            **server_env(work / "state.db"),
            "MODELGATE_MODEL_ROOT": str(work / "models"),
            "MODELGATE_PIPELINE_ROOT": str(work / "no-pipelines"),
            "MODELGATE_JOB_POLL_INTERVAL_SECONDS": "0.1",
            "MODELGATE_MODEL_WATCH_INTERVAL_SECONDS": "0",
        }
        env = {**os.environ, **env}
        login = prepare_database(bin_dir / "flask", ROOT, env)
        port = free_port()
        env["MODELGATE_BIND"] = f"{HOST}:{port}"
        with GunicornServer(bin_dir / "gunicorn", ROOT, env, port, work / "gunicorn.log") as srv:
            versions = sum(1 for p in (work / "models" / "digits").iterdir() if p.name.isdigit())
            srv.wait_ready(120, versions_per_worker=versions, workers=2)
            headers = auth_headers(port, login, "token")
            rows: list[tuple[str, str, str, str, str]] = []

            alone = Interactive(port, headers, args.clients)
            elapsed = alone.run_for(args.seconds)
            base_rate = len(alone.latencies) / elapsed
            p50, p99 = percentiles_ms(alone.latencies)
            rows.append(("interactive only", f"{base_rate:.0f}", f"{p50:.1f}", f"{p99:.1f}", "-"))

            job = submit_job(port, headers, args.items)
            wait_started(port, headers, job)
            started = time.perf_counter()
            while job_progress(port, headers, job)[0] != "succeeded":
                time.sleep(0.05)
            job_rate = args.items / (time.perf_counter() - started)
            rows.append(("job only", "-", "-", "-", f"{job_rate:.0f}"))

            job = submit_job(port, headers, args.items)
            wait_started(port, headers, job)
            before = job_progress(port, headers, job)[1]
            both = Interactive(port, headers, args.clients)
            elapsed = both.run_for(args.seconds)
            state, after = job_progress(port, headers, job)
            shared_rate = len(both.latencies) / elapsed
            p50b, p99b = percentiles_ms(both.latencies)
            busy_job_rate = (after - before) / elapsed
            rows.append(
                (
                    "both",
                    f"{shared_rate:.0f}",
                    f"{p50b:.1f}",
                    f"{p99b:.1f}",
                    f"{busy_job_rate:.0f}" + ("" if state == "running" else f" ({state})"),
                )
            )
            errors = alone.errors + both.errors

    header = ("phase", "interactive req/s", "p50 ms", "p99 ms", "job items/s")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print(
        f"digits v1 (SavedModel), {args.clients} interactive clients, "
        f"jobs of {args.items} items, {args.seconds:g} s windows"
    )
    for row in [header, *rows]:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(
        f"interactive throughput with a job running: {shared_rate / base_rate:.2f}x of alone; "
        f"p50 {p50b / p50:.2f}x; job speed under load: {busy_job_rate / job_rate:.2f}x of alone; "
        f"failed interactive requests: {errors}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

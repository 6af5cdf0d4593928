"""A rollout under load: 32 clients predict while a version is added, canaried 10 -> 50 ->
100 %, promoted, rolled back, promoted again, and the old version retired.

Prints failed requests (must be 0), each version's observed share against its weight per
phase (requests sent at least 1 s after the change, the propagation bound), and p50/p99
latency per phase. Runs its own gunicorn on 127.0.0.1 with a throwaway database and a copy
of the bundled iris model; bounded in time; stops the server on exit.

    .venv/bin/python bench/rollout.py [--clients 32] [--phase-seconds 4]
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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.credentials import auth_headers, prepare_database, server_env  # noqa: E402
from bench.loadgen import HOST, GunicornServer, free_port, percentiles_ms  # noqa: E402

BODY = json.dumps(
    {
        "instances": [
            {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}
        ]
    }
).encode()
PROPAGATION_SECONDS = 1.0


@dataclass
class Sample:
    sent_at: float
    latency_ms: float
    status: int
    version: str


class Clients:
    def __init__(self, port: int, headers: dict[str, str], count: int) -> None:
        self.port, self.headers, self.count = port, headers, count
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def _run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        headers = {"Content-Type": "application/json", **self.headers}
        for _ in range(1_000_000):  # bounded; the stop event ends it long before
            if self._stop.is_set():
                break
            sent = time.monotonic()
            try:
                conn.request("POST", "/api/models/iris/predict", body=BODY, headers=headers)
                response = conn.getresponse()
                response.read()
                sample = Sample(
                    sent,
                    (time.monotonic() - sent) * 1000,
                    response.status,
                    response.headers.get("X-Model-Version", "?"),
                )
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                sample = Sample(sent, (time.monotonic() - sent) * 1000, 0, "?")
            with self._lock:
                self.samples.append(sample)
        conn.close()

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(35)


def call(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, object] | None = None,
) -> tuple[int, object]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(
            method, path, body=payload, headers={"Content-Type": "application/json", **headers}
        )
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, json.loads(raw) if raw else None


def wait_ready_everywhere(
    port: int, headers: dict[str, str], version: int, timeout_seconds: float = 60
) -> float:
    """Until 20 answers in a row (any worker) show ``version`` READY; returns seconds."""
    started, streak = time.monotonic(), 0
    while time.monotonic() - started < timeout_seconds:
        _, body = call(port, "GET", "/api/models/iris", headers)
        states = {v["version"]: v["state"] for v in body["versions"]}  # type: ignore[index]
        streak = streak + 1 if states.get(version) == "READY" else 0
        if streak >= 20:
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"version {version} not READY everywhere in {timeout_seconds}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--phase-seconds", type=float, default=4.0)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="modelgate-rollout-") as tmp:
        work = Path(tmp)
        models = work / "models"
        shutil.copytree(ROOT / "models" / "iris", models / "iris")
        (models / "routing.toml").write_text("[iris]\nlabels = { stable = 1 }\n")
        env = {
            **server_env(work / "state.db"),
            "MODELGATE_MODEL_ROOT": str(models),
            "MODELGATE_MODEL_WATCH_INTERVAL_SECONDS": "0.5",
        }
        full_env = {**os.environ, **env}
        login = prepare_database(bin_dir / "flask", ROOT, full_env)
        port = free_port()
        full_env["MODELGATE_BIND"] = f"{HOST}:{port}"
        with GunicornServer(
            bin_dir / "gunicorn", ROOT, full_env, port, work / "server.log"
        ) as server:
            server.wait_ready(120, versions_per_worker=1, workers=2)
            admin = auth_headers(port, login, "token")
            client_headers = auth_headers(port, login, "key")
            phases: list[tuple[str, float, dict[str, float]]] = []
            ends: list[float] = []

            def change(
                name: str,
                method: str,
                path: str,
                body: dict[str, object] | None,
                expected: dict[str, float],
            ) -> None:
                # The previous phase ends when this change is asked for, this one begins
                # when the change has been stored.
                ends.append(time.monotonic())
                if method:
                    status, answer = call(port, method, path, admin, body)
                    if status != 200:
                        raise RuntimeError(f"{name}: {status} {answer}")
                phases.append((name, time.monotonic(), expected))
                time.sleep(args.phase_seconds)

            with Clients(port, client_headers, args.clients) as clients:
                change("baseline (v1 stable)", "", "", None, {"1": 100})
                staging = models / ".staging-2"
                shutil.copytree(models / "iris" / "1", staging)
                staging.rename(models / "iris" / "2")
                added_at = time.monotonic()
                ends.append(added_at)
                load_seconds = wait_ready_everywhere(port, admin, 2)
                phases.append(("v2 added, loading", added_at, {"1": 100}))
                change(
                    "canary 10 %",
                    "PUT",
                    "/api/models/iris/canary",
                    {"version": 2, "percent": 10},
                    {"1": 90, "2": 10},
                )
                change(
                    "canary 50 %",
                    "PUT",
                    "/api/models/iris/canary",
                    {"version": 2, "percent": 50},
                    {"1": 50, "2": 50},
                )
                change(
                    "canary 100 %",
                    "PUT",
                    "/api/models/iris/canary",
                    {"version": 2, "percent": 100},
                    {"2": 100},
                )
                change("promote v2", "POST", "/api/models/iris/promote", {"version": 2}, {"2": 100})
                change("roll back to v1", "POST", "/api/models/iris/rollback", None, {"1": 100})
                change(
                    "promote v2 again",
                    "POST",
                    "/api/models/iris/promote",
                    {"version": 2},
                    {"2": 100},
                )
                shutil.rmtree(models / "iris" / "1")
                change("v1 directory removed (retired)", "", "", None, {"2": 100})
                ended = time.monotonic()
            samples = clients.samples
        shutil.copy(work / "server.log", Path(tempfile.gettempdir()) / "rollout-server.log")
    failed = [s for s in samples if s.status != 200]
    print(
        f"rollout under load: {args.clients} clients, {len(samples)} requests, "
        f"{len(failed)} failed (must be 0); v2 READY on every worker {load_seconds:.1f} s "
        "after its directory appeared"
    )
    print(
        f"{'phase':32} {'requests':>8} {'observed share':>24} {'weight':>16} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'last old answer':>15}"
    )
    bounds = [*ends[1:], ended]
    for (name, start, expected), end in zip(phases, bounds, strict=True):
        window = [s for s in samples if start <= s.sent_at < end]
        settled = [s for s in window if s.sent_at >= start + PROPAGATION_SECONDS]
        shares = Counter(s.version for s in settled)
        total = sum(shares.values()) or 1
        observed = " ".join(f"v{v}:{100 * n / total:.1f}%" for v, n in sorted(shares.items()))
        weight = " ".join(f"v{v}:{w:g}%" for v, w in sorted(expected.items()))
        p50, p99 = percentiles_ms([s.latency_ms / 1000 for s in window])
        # The latest request (by send time) that a version the new state gives no traffic
        # answered: how long the change took to reach every worker, as clients saw it.
        stale = [s.sent_at - start for s in window if s.version not in expected]
        last = f"+{max(stale):.2f} s" if stale else "-"
        print(
            f"{name:32} {len(window):>8} {observed:>24} {weight:>16} "
            f"{(p50 or 0):>7.1f} {(p99 or 0):>7.1f} {last:>15}"
        )
    if failed:
        print("failures:", Counter(s.status for s in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The real gunicorn server as a subprocess, and the client threads that load it.

Nothing here imports the serving core or TensorFlow: this is the outside view of the server.
Requests only ever go to 127.0.0.1, to the server this module started.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
# Every loop is bounded by a deadline and by a count, whichever comes first.
MAX_REQUESTS_PER_CLIENT = 1_000_000
REQUEST_TIMEOUT_SECONDS = 30.0
READY_POLL_SECONDS = 0.5
# A ready answer comes from whichever worker accepted the connection: ask on this many fresh
# connections in a row, and see GunicornServer.wait_ready for the per-worker check.
READY_CONFIRMATIONS = 12
STOP_TIMEOUT_SECONDS = 30.0  # gunicorn.conf.py has graceful_timeout = 20

# body, Content-Type, and optionally headers of that request alone (e.g. the v2 binary tensor
# extension's Inference-Header-Content-Length)
Request = tuple[bytes, str] | tuple[bytes, str, Mapping[str, str]]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def percentiles_ms(latencies: Sequence[float]) -> tuple[float | None, float | None]:
    """p50 and p99 of latencies given in seconds, in milliseconds; None for no samples."""
    if not latencies:
        return None, None
    p50, p99 = np.percentile(np.asarray(latencies), [50, 99])
    return float(p50) * 1000, float(p99) * 1000


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process so far (Linux), or None if it is gone."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float] | None:
    """Busy and iowait CPU seconds of the whole machine since boot (Linux /proc/stat)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, iowait, irq, softirq, steal = ([*map(int, first[1:]), 0, 0])[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, iowait / tick


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def other_cpu_percent(
    machine_before: tuple[float, float] | None,
    machine_after: tuple[float, float] | None,
    accounted_seconds: float,
    seconds: float,
) -> tuple[float | None, float | None]:
    """CPU that neither this benchmark nor its server used, and iowait, over ``seconds``
    (100% = one core): how busy the rest of the machine was while we measured."""
    if machine_before is None or machine_after is None:
        return None, None
    busy = machine_after[0] - machine_before[0]
    iowait = machine_after[1] - machine_before[1]
    return max(0.0, 100 * (busy - accounted_seconds) / seconds), 100 * iowait / seconds


def _prepare(request: Request, headers: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
    """The body and every header of one request: its Content-Type, the common headers, its own."""
    body, content_type, *own = request
    return body, {"Content-Type": content_type, **headers, **(own[0] if own else {})}


def post_once(
    port: int, path: str, request: Request, headers: Mapping[str, str]
) -> tuple[int | str, bytes]:
    """One POST on a fresh connection: the status (or the exception's name) and the body."""
    body, request_headers = _prepare(request, headers)
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        conn.request("POST", path, body=body, headers=request_headers)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as err:
        return type(err).__name__, b""
    finally:
        conn.close()


def _socket_owner(server_port: int, client_port: int, pids: set[int]) -> int | None:
    """Which of ``pids`` holds the server end of the 127.0.0.1 connection from ``client_port``
    (Linux: /proc/net/tcp names the socket's inode, /proc/<pid>/fd who holds it)."""
    inode = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
            if int(local, 16) == server_port and int(remote, 16) == client_port:
                inode = fields[9]
                break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) == target:
                        return pid
    return None


class GunicornServer:
    """``gunicorn -c gunicorn.conf.py "app:create_app()"`` in its own session.

    Its own session means Ctrl-C in the terminal reaches only this script, which then stops the
    server in order, and a SIGKILL to the process group cannot miss a worker. Its stdout and
    stderr (access log, JSON logs) go to ``log_path``: a pipe nobody reads would fill up and
    stall the server.
    """

    def __init__(
        self, gunicorn: Path, cwd: Path, env: Mapping[str, str], port: int, log_path: Path
    ) -> None:
        self.gunicorn = gunicorn
        self.cwd = cwd
        self.env = dict(env)
        self.port = port
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GunicornServer:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(self.gunicorn), "-c", "gunicorn.conf.py", "app:create_app()"],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._proc is not None, "the server was not started"
        return self._proc.pid

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL to the whole session if it does not end in time."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # A worker orphaned by a killed master would still be in the session's process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self._log().splitlines()[-lines:])

    def workers(self) -> list[int]:
        """Worker pids: the master's children, read from /proc (Linux; empty elsewhere)."""
        pids = []
        with contextlib.suppress(OSError):
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    fields = _proc_stat(int(entry.name))
                    if fields is not None and int(fields[1]) == self.pid:
                        pids.append(int(entry.name))
        return sorted(pids)

    def get_from_each_worker(
        self, path: str, headers: Mapping[str, str], tries: int = 60
    ) -> dict[int, tuple[int, bytes]]:
        """GET ``path`` until every worker has answered once: {worker pid: (status, body)}.

        Per-process figures (the batching stats) come from whichever worker accepted the
        connection, and the answer does not say which one that was; /proc does (Linux): the
        worker holding the server end of the connection. Fresh connections until each worker
        was hit, at most ``tries``; a worker missing from the answer was not reached.
        """
        workers = set(self.workers())
        answers: dict[int, tuple[int, bytes]] = {}
        for _ in range(tries):
            if workers <= answers.keys():
                break
            conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT_SECONDS)
            try:
                conn.request("GET", path, headers=dict(headers))
                response = conn.getresponse()
                body = response.read()
                # The connection is still open (keep-alive): its server end is in a worker.
                owner = (
                    _socket_owner(self.port, conn.sock.getsockname()[1], workers)
                    if conn.sock is not None
                    else None
                )
            except (OSError, http.client.HTTPException):
                continue
            finally:
                conn.close()
            if owner is not None:
                answers.setdefault(owner, (response.status, body))
        return answers

    def _versions_settled(self) -> int:
        """Log lines of the registry saying a version became READY or FAILED, all workers."""
        text = self._log()
        return text.count('"message": "version ready in') + text.count(
            '"message": "version failed to load'
        )

    def _ready_once(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            conn.request("GET", "/v2/health/ready")
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def wait_ready(self, timeout_seconds: float, versions_per_worker: int, workers: int) -> str:
        """Block until every worker has loaded its models; returns a note ('' when all clear).

        ``/v2/health/ready`` answers for the one worker that took the connection, so a 200
        says nothing about the others (each loads its own models after the fork). Besides
        several 200s in a row on fresh connections, wait until the log shows every worker
        settling every version. Raises RuntimeError if gunicorn exits or nothing is ready in
        time.
        """
        deadline = time.monotonic() + timeout_seconds
        streak = 0
        for _ in range(int(timeout_seconds / 0.05) + 1):
            assert self._proc is not None, "the server was not started"
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited with status {self._proc.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                break
            streak = streak + 1 if self._ready_once() else 0
            if streak >= READY_CONFIRMATIONS:
                if self._versions_settled() >= versions_per_worker * workers:
                    return ""
                time.sleep(READY_POLL_SECONDS)
            elif streak == 0:
                time.sleep(READY_POLL_SECONDS)
        if streak >= READY_CONFIRMATIONS:
            return (
                "readiness: /v2/health/ready answered 200 but the log does not show every "
                "worker loading every version; measured anyway"
            )
        raise RuntimeError(
            f"server not ready after {timeout_seconds:.0f}s; log tail:\n{self.log_tail()}"
        )


@dataclass
class LoadResult:
    """What N clients got from one route during one measured window."""

    clients: int
    seconds: float
    requests: int = 0
    items_per_second: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    warmup_errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_sample: str = ""
    server_cpu_percent: float | None = None
    worker_cpu_split: list[int] = field(default_factory=list)
    bench_cpu_percent: float | None = None
    other_cpu_percent: float | None = None
    iowait_percent: float | None = None
    note: str = ""


@dataclass
class _ClientStats:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: int = 0
    error_sample: str = ""


def _client(
    port: int,
    path: str,
    requests: Sequence[Request],
    headers: Mapping[str, str],
    offset: int,
    window: tuple[float, float],
    stop: threading.Event,
    stats: _ClientStats,
) -> None:
    """Send requests back-to-back on one keep-alive connection until the window closes.

    Only requests that complete inside the window count, so the rate is the steady-state
    rate: the warm-up before the window and the stragglers after it are left out.
    """
    window_start, window_end = window
    # One header dict per Content-Type, built once: the loop should cost the server, not us.
    prepared = [_prepare(request, headers) for request in requests]
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        for i in range(MAX_REQUESTS_PER_CLIENT):
            began = time.perf_counter()
            if began >= window_end or stop.is_set():
                break
            body, request_headers = prepared[(offset + i) % len(prepared)]
            detail = ""
            try:
                conn.request("POST", path, body=body, headers=request_headers)
                response = conn.getresponse()
                payload = response.read()
                outcome = str(response.status)
                if response.status != 200:
                    detail = payload[:300].decode("utf-8", "replace")
            except (OSError, http.client.HTTPException) as err:
                outcome = type(err).__name__
                detail = str(err)[:300]
                conn.close()  # the next request reconnects
            ended = time.perf_counter()
            if outcome != "200":
                stats.error_sample = stats.error_sample or f"{outcome}: {detail}"
            if ended < window_start:
                stats.warmup_errors += outcome != "200"
            elif ended <= window_end:
                if outcome == "200":
                    stats.latencies.append(ended - began)
                else:
                    stats.errors[outcome] += 1
    finally:
        conn.close()


def _sleep_until(moment: float) -> None:
    remaining = moment - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)


def run_load(
    server: GunicornServer,
    path: str,
    requests: Sequence[Request],
    headers: Mapping[str, str],
    clients: int,
    seconds: float,
    warmup_seconds: float,
    stop: threading.Event,
    latencies_out: list[float] | None = None,
) -> LoadResult:
    """``clients`` threads POST ``requests`` (cycled) to ``path``: rates, latencies and CPU.

    CPU is read from /proc at the window's edges: the workers' (100% = one core) and this
    process's, which is mostly the client threads. ``latencies_out``, when given, receives
    every measured request's latency in seconds (to pool several windows).
    """
    stats = [_ClientStats() for _ in range(clients)]
    window_start = time.perf_counter() + warmup_seconds
    window = (window_start, window_start + seconds)
    threads = [
        threading.Thread(
            target=_client,
            args=(server.port, path, requests, headers, i, window, stop, stats[i]),
            name=f"bench-client-{i}",
            daemon=True,  # never keeps the interpreter alive after Ctrl-C
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    workers = server.workers()
    _sleep_until(window[0])
    cpu_before = [cpu_seconds(p) for p in workers]
    own_before, machine_before = own_cpu_seconds(), machine_cpu_seconds()
    _sleep_until(window[1])
    cpu_after = [cpu_seconds(p) for p in workers]
    own_after, machine_after = own_cpu_seconds(), machine_cpu_seconds()
    join_deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS + 5
    for thread in threads:
        thread.join(max(0.0, join_deadline - time.monotonic()))

    result = LoadResult(clients=clients, seconds=seconds)
    if any(t.is_alive() for t in threads):
        result.note = "some clients did not finish in time"
    latencies = [lat for s in stats for lat in s.latencies]
    if latencies_out is not None:
        latencies_out.extend(latencies)
    errors: Counter[str] = Counter()
    for s in stats:
        errors.update(s.errors)
    result.requests = len(latencies)
    result.items_per_second = len(latencies) / seconds
    result.p50_ms, result.p99_ms = percentiles_ms(latencies)
    result.errors = sum(errors.values())
    result.warmup_errors = sum(s.warmup_errors for s in stats)
    result.error_kinds = dict(errors)
    result.error_sample = next((s.error_sample for s in stats if s.error_sample), "")
    used = [
        after - before
        for before, after in zip(cpu_before, cpu_after, strict=True)
        if before is not None and after is not None
    ]
    total = sum(used)
    if used:
        result.server_cpu_percent = 100 * total / seconds
        result.worker_cpu_split = [round(100 * u / total) if total else 0 for u in used]
    own = own_after - own_before
    result.bench_cpu_percent = 100 * own / seconds
    result.other_cpu_percent, result.iowait_percent = other_cpu_percent(
        machine_before, machine_after, total + own, seconds
    )
    return result

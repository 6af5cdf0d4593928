"""Real gunicorn servers for the multi-process tests: start, find which worker answered,
stop the whole process group whatever happens."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from accounts.models import User
from accounts.security import ROLES
from tests.conftest import PASSWORD, password_hash
from tests.security.conftest import ROOT, bearer, clean_environ, flask_cli

START_TIMEOUT_SECONDS = 60
WORKERS = 2
REQUEST_TIMEOUT_SECONDS = 30
# The access log names the worker (<pid>) that served each request id.
ACCESS_LOG_FORMAT = "%(p)s %(s)s rid=%({x-request-id}o)s"  # %(p)s is "<pid>"
_SERVED = re.compile(r"<(\d+)> (\d{3}) rid=(\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def prepare_database(uri: str) -> None:
    """Migrate an empty database as `make run` does, then add one user per role (password
    PASSWORD), named after the role."""
    result = flask_cli(uri, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(uri)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(User),
                [
                    {
                        "username": role,
                        "role": role,
                        "scopes": "infer:*",
                        "password_hash": password_hash(),
                        "disabled": False,
                        "created_at": dt.datetime.now(dt.UTC),
                    }
                    for role in ROLES
                ],
            )
    finally:
        engine.dispose()


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]
    log_path: Path
    sessions: list[requests.Session] = field(default_factory=list)  # closed by stop()

    def url(self, path: str) -> str:
        return self.base + path

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def served_by(self, request_ids: Iterable[str], timeout: float = 5.0) -> dict[str, int]:
        """Which worker pid served each request id, read from the access log."""
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout
        while True:
            found = {
                rid: int(pid)
                for pid, _status, rid in _SERVED.findall(self.log_path.read_text())
                if rid in wanted
            }
            if len(found) == len(wanted) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> None:
        for session in self.sessions:
            session.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_servers(log_dir: Path, *settings: dict[str, str]) -> list[Server]:
    """One gunicorn server (two workers) per ``settings`` (MODELGATE_* variables without the
    prefix), started side by side as `make run` starts them; returns once every worker of
    every server answers. The caller stops them (Server.stop) in a finalizer."""
    servers = [_launch(log_dir, one) for one in settings]
    try:
        for server in servers:
            _wait_until_every_worker_answers(server, WORKERS)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _launch(log_dir: Path, settings: dict[str, str]) -> Server:
    port = free_port()
    env = {
        **clean_environ(),
        **{f"MODELGATE_{key}": value for key, value in settings.items()},
        "MODELGATE_BIND": f"127.0.0.1:{port}",
        "MODELGATE_WORKERS": str(WORKERS),
    }
    log_path = log_dir / f"gunicorn-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "-c",
                "gunicorn.conf.py",
                "--access-logformat",
                ACCESS_LOG_FORMAT,
                "app:create_app()",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(f"http://127.0.0.1:{port}", process, log_path)


def _wait_until_every_worker_answers(server: Server, workers: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    answered: set[int] = set()
    while len(answered) < workers:
        if server.process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{server.log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gunicorn not ready:\n{server.log_path.read_text()[-3000:]}")
        ids = [uuid.uuid4().hex for _ in range(8)]
        try:
            statuses = concurrently(
                lambda rid: (
                    requests.get(
                        server.url("/v2/health/ready"), headers={"X-Request-ID": rid}, timeout=5
                    ).status_code
                ),
                ids,
            )
        except requests.RequestException:  # not listening yet, or busy starting
            time.sleep(0.2)
            continue
        ready = {rid for rid, status in zip(ids, statuses, strict=True) if status == 200}
        answered |= set(server.served_by(ready, timeout=1).values())


def concurrently(call: Callable[[Any], Any], arguments: list[Any], threads: int = 20) -> list[Any]:
    """``call`` on every argument from ``threads`` threads at once; results in order."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(call, arguments))


def send(
    server: Server, method: str, path: str, *, session: Any = requests, **kwargs: Any
) -> tuple[str, requests.Response]:
    """One request tagged with a fresh request id (to find its worker in the log)."""
    rid = uuid.uuid4().hex
    headers = {**kwargs.pop("headers", {}), "X-Request-ID": rid}
    response = session.request(
        method, server.url(path), headers=headers, timeout=REQUEST_TIMEOUT_SECONDS, **kwargs
    )
    return rid, response


def sessions_across_workers(server: Server, batch: int = 8) -> list[requests.Session]:
    """Keep-alive connections, opened a batch at a time until every worker holds one of them
    (the kernel hands a burst of connections mostly to one worker)."""
    workers = server.worker_pids()
    sessions: list[requests.Session] = []
    reached: set[int] = set()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while reached != workers:
        assert time.monotonic() < deadline, f"only workers {reached} of {workers} answered"
        opened = [requests.Session() for _ in range(batch)]
        server.sessions += opened
        sent = concurrently(lambda s: send(server, "GET", "/v2/health/live", session=s), opened)
        reached |= set(server.served_by(rid for rid, _ in sent).values())
        sessions += opened
    return sessions


def sign_in(server: Server, username: str) -> dict[str, Any]:
    _, response = send(
        server, "POST", "/auth/token", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def user_id(server: Server, admin: dict[str, str], username: str) -> int:
    _, response = send(server, "GET", "/api/users", headers=admin)
    return next(int(u["id"]) for u in response.json() if u["username"] == username)


def answers_for_one_second(
    server: Server, sessions: list[requests.Session], headers: dict[str, str]
) -> dict[int, list[int]]:
    """GET /api/models with ``headers`` from the moment this is called until a second later,
    over ``sessions`` (connections spread across the workers); the statuses by worker pid."""
    sent: list[tuple[str, requests.Response]] = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        sent += concurrently(
            lambda s: send(server, "GET", "/api/models", session=s, headers=headers), sessions
        )
    by_worker: dict[int, list[int]] = {}
    served = server.served_by(rid for rid, _ in sent)
    for rid, response in sent:
        by_worker.setdefault(served[rid], []).append(response.status_code)
    return by_worker


def create_key(server: Server, limit: str) -> tuple[int, str]:
    admin = bearer(sign_in(server, "admin")["access_token"])
    _, response = send(
        server, "POST", "/api/keys", headers=admin, json={"name": "load", "rate_limit": limit}
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"]), str(response.json()["key"])


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")

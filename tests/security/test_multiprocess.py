"""Real gunicorn servers: revocation and disabling seen by every worker and every replica within a
second, rate limits exact across workers (SQLite) and replicas (PostgreSQL + Redis), hostile
bodies answered without the workers' memory growing, and no server software announced."""

from __future__ import annotations

import secrets
import shutil
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import BUNDLED_MODELS
from tests.security.conftest import (
    bearer,
    png_header,
    redis_limit_settings,
    throwaway_pg_database,
)
from tests.security.servers import (
    Server,
    answers_for_one_second,
    concurrently,
    create_key,
    memory_kib,
    prepare_database,
    send,
    sessions_across_workers,
    sign_in,
    start_servers,
    user_id,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

IRIS = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
MiB = 1024 * 1024
UPLOAD_LIMIT = 2 * MiB


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Bundled TFLite versions only, so no worker imports TensorFlow: iris (features) and
    digits v2 (images); and a fresh 48-character secret."""
    for needed in ("iris", "digits/2"):
        if not (BUNDLED_MODELS / needed).is_dir():
            pytest.fail(f"models/{needed} is missing: `make models` trains it")
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(BUNDLED_MODELS / "iris", root / "iris")
    shutil.copytree(BUNDLED_MODELS / "digits" / "2", root / "digits" / "2")
    shutil.copy(BUNDLED_MODELS / "digits" / "model.toml", root / "digits" / "model.toml")
    return {
        "MODEL_ROOT": str(root),
        "JWT_SECRET_KEY": secrets.token_hex(24),
        # The module sends thousands of requests from one address; the limits under test
        # are the keys' own.
        "RATELIMIT_PER_IP": "1000000 per minute",
        "RATELIMIT_PER_PRINCIPAL": "1000000 per minute",
    }


@pytest.fixture(scope="module")
def sqlite_servers(
    tmp_path_factory: pytest.TempPathFactory, settings: dict[str, str]
) -> Iterator[tuple[Server, Server]]:
    """The default deployment, two workers on one SQLite file, uploads up to 2 MiB; and the
    same with one thread per worker, whose memory is measured (with four threads, each malloc
    arena settles on its own and the total wanders by a few dozen MiB)."""
    directory = tmp_path_factory.mktemp("sqlite")
    database = f"sqlite:///{directory / 'modelgate.db'}"
    prepare_database(database)
    common = {
        **settings,
        "SQLALCHEMY_DATABASE_URI": database,
        "MAX_CONTENT_LENGTH": str(UPLOAD_LIMIT),
    }
    default, single_threaded = start_servers(directory, common, {**common, "THREADS": "1"})
    try:
        yield default, single_threaded
    finally:
        default.stop()
        single_threaded.stop()


@pytest.fixture(scope="module")
def server(sqlite_servers: tuple[Server, Server]) -> Server:
    return sqlite_servers[0]


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, settings: dict[str, str]
) -> Iterator[tuple[Server, Server]]:
    """Two servers of two workers each, sharing PostgreSQL and counting limits in Redis."""
    directory = tmp_path_factory.mktemp("replicas")
    with throwaway_pg_database() as database, redis_limit_settings() as limits:
        prepare_database(database)
        shared = {**settings, **limits, "SQLALCHEMY_DATABASE_URI": database}
        first, second = start_servers(directory, shared, shared)
        try:
            yield first, second
        finally:
            first.stop()
            second.stop()


def test_logout_is_refused_by_every_worker_at_once(server: Server) -> None:
    tokens = sign_in(server, "viewer")
    headers = bearer(tokens["access_token"])
    sessions = sessions_across_workers(server)
    before = answers_for_one_second(server, sessions, headers)
    assert set(before) == server.worker_pids()
    assert {status for statuses in before.values() for status in statuses} == {200}

    _, out = send(
        server,
        "POST",
        "/auth/logout",
        headers=headers,
        json={"refresh_token": tokens["refresh_token"]},
    )
    after = answers_for_one_second(server, sessions, headers)

    assert out.status_code == 204
    assert set(after) == server.worker_pids()
    assert {status for statuses in after.values() for status in statuses} == {401}
    refreshed = send(server, "POST", "/auth/refresh", headers=bearer(tokens["refresh_token"]))[1]
    assert refreshed.status_code == 401


def test_disabled_user_is_refused_by_every_worker_at_once(server: Server) -> None:
    admin = bearer(sign_in(server, "admin")["access_token"])
    headers = bearer(sign_in(server, "predictor")["access_token"])
    patch = f"/api/users/{user_id(server, admin, 'predictor')}"
    sessions = sessions_across_workers(server)
    assert send(server, "GET", "/api/models", headers=headers)[1].status_code == 200

    _, out = send(server, "PATCH", patch, headers=admin, json={"disabled": True})
    after = answers_for_one_second(server, sessions, headers)

    assert out.status_code == 200
    assert set(after) == server.worker_pids()
    assert {status for statuses in after.values() for status in statuses} == {401}


def predict_with_key(servers: list[Server], secret: str, total: int) -> Counter[int]:
    """``total`` concurrent predictions with the key, spread over ``servers`` round-robin."""

    connections = [
        (i, s) for i, target in enumerate(servers) for s in sessions_across_workers(target)
    ]

    def predict(connection: tuple[int, requests.Session]) -> tuple[int, str, requests.Response]:
        index, session = connection
        rid, response = send(
            servers[index],
            "POST",
            "/api/models/iris/predict",
            session=session,
            headers={"X-API-Key": secret},
            json=IRIS,
        )
        return index, rid, response

    # Bursts as wide as the connections, each connection used once per burst.
    plan = [connections[i % len(connections)] for i in range(total)]
    results = []
    for start in range(0, total, len(connections)):
        burst = plan[start : start + len(connections)]
        results += concurrently(predict, burst, threads=len(burst))
    for index, target in enumerate(servers):
        served = target.served_by(rid for i, rid, _ in results if i == index)
        assert set(served.values()) == target.worker_pids(), "a worker got no request"
    for _, _, response in results:
        if response.status_code == 429:
            assert response.json()["code"] == "too_many_requests"
            assert int(response.headers["Retry-After"]) >= 1
    return Counter(response.status_code for _, _, response in results)


def test_key_limit_is_exact_across_two_workers(server: Server) -> None:
    key_id, secret = create_key(server, "20 per minute")

    counts = predict_with_key([server], secret, 60)

    assert counts == {200: 20, 429: 40}
    admin = bearer(sign_in(server, "admin")["access_token"])
    usage = send(server, "GET", f"/api/keys/{key_id}", headers=admin)[1].json()["usage"]
    assert (usage["requests"], usage["items"], usage["errors"]) == (60, 20, 40)


def test_key_limit_is_exact_across_two_replicas_sharing_redis(
    replicas: tuple[Server, Server],
) -> None:
    _, secret = create_key(replicas[0], "20 per minute")

    counts = predict_with_key(list(replicas), secret, 60)

    assert counts == {200: 20, 429: 40}


def test_logout_and_disabling_through_one_replica_are_seen_by_the_other(
    replicas: tuple[Server, Server],
) -> None:
    first, second = replicas
    tokens = sign_in(first, "viewer")
    viewer = bearer(tokens["access_token"])
    predictor = bearer(sign_in(second, "predictor")["access_token"])
    admin = bearer(sign_in(first, "admin")["access_token"])
    patch = f"/api/users/{user_id(first, admin, 'predictor')}"
    sessions = sessions_across_workers(second)
    assert send(second, "GET", "/api/models", headers=viewer)[1].status_code == 200

    assert send(first, "POST", "/auth/logout", headers=viewer)[1].status_code == 204
    assert send(first, "PATCH", patch, headers=admin, json={"disabled": True})[1].ok

    for headers in (viewer, predictor):
        after = answers_for_one_second(second, sessions, headers)
        assert set(after) == second.worker_pids()
        assert {status for statuses in after.values() for status in statuses} == {401}


def _hostile_round(server: Server, headers: dict[str, str]) -> list[int]:
    def endless() -> Iterator[bytes]:
        for _ in range(64 * 16):  # 64 MiB without Content-Length, 32 times the upload limit
            yield bytes(64 * 1024)

    bodies: list[tuple[str, str, Any]] = [
        ("digits", "image/png", png_header(30_000, 30_000)),
        ("iris", "application/json", b"[" * 100_000),
        ("iris", "application/json", b'{"instances": "' + b'\\"' * 40_000),
        ("iris", "application/json", b'{"instances": [' + b"[1, 2, 3, 4], " * 110_000 + b"[1]]}"),
        ("digits", "image/png", endless()),
        ("iris", "application/json", endless()),
    ]
    statuses = []
    for model, content_type, body in bodies:
        start = time.monotonic()
        _, response = send(
            server,
            "POST",
            f"/api/models/{model}/predict",
            headers={**headers, "Content-Type": content_type},
            data=body,
        )
        assert time.monotonic() - start < 3.0, (model, content_type)
        statuses.append(response.status_code)
    return statuses


def test_hostile_bodies_are_answered_quickly_without_memory_growth(
    sqlite_servers: tuple[Server, Server],
) -> None:
    server = sqlite_servers[1]
    headers = bearer(sign_in(server, "admin")["access_token"])
    sessions_across_workers(server)
    for _ in range(4):  # let the allocators settle (numpy, one malloc arena per thread)
        _hostile_round(server, headers)
    settled = {pid: memory_kib(pid, "VmRSS") for pid in server.worker_pids()}
    for pid in settled:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM restarts from VmRSS

    statuses = [status for _ in range(8) for status in _hostile_round(server, headers)]

    assert statuses == [422, 422, 422, 413, 413, 413] * 8
    for pid, before in settled.items():
        # Less than one 64 MiB body at the peak (a decoded 30000x30000 image is 900 MB), and
        # nothing kept from one request to the next.
        assert memory_kib(pid, "VmHWM") - before < 48 * 1024, pid
        assert memory_kib(pid, "VmRSS") - before < 8 * 1024, pid


def test_no_answer_names_the_server_software(server: Server) -> None:
    answers = [
        send(server, "GET", path)[1]
        for path in ("/v2/health/live", "/api/models", "/nope", "/docs")
    ]
    with socket.create_connection(
        ("127.0.0.1", int(server.base.rsplit(":", 1)[1])), timeout=5
    ) as raw:
        raw.sendall(b"NOT HTTP\r\n\r\n")
        malformed = raw.recv(65536).decode(errors="replace")

    for response in answers:
        assert response.headers["Server"] == "modelgate"
        assert "gunicorn" not in str(response.headers).lower()
        assert "gunicorn" not in response.text.lower()
    assert malformed.startswith("HTTP/1.1 400")
    assert "gunicorn" not in malformed.lower()


DIGIT_TENSOR = {
    "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 8, 8, 1], "data": [0.0] * 64}]
}


def _route_reasons_after(
    server: Server, sessions: list[requests.Session], headers: dict[str, str], changed_at: float
) -> dict[int, list[tuple[float, str]]]:
    """Infer on digits over every session for 1.5 s; (seconds since the change, reason) by
    worker pid."""
    sent: list[tuple[float, str, requests.Response]] = []
    deadline = time.monotonic() + 1.5

    def infer(session: requests.Session) -> tuple[float, str, requests.Response]:
        at = time.monotonic() - changed_at
        rid, response = send(
            server,
            "POST",
            "/v2/models/digits/infer",
            session=session,
            headers=headers,
            json=DIGIT_TENSOR,
        )
        return at, rid, response

    while time.monotonic() < deadline:
        sent += concurrently(infer, sessions)
    served = server.served_by(rid for _, rid, _ in sent)
    by_worker: dict[int, list[tuple[float, str]]] = {}
    for at, rid, response in sent:
        assert response.status_code == 200, response.text
        by_worker.setdefault(served[rid], []).append((at, response.headers["X-Route-Reason"]))
    return by_worker


def _assert_applied_within_a_second(
    by_worker: dict[int, list[tuple[float, str]]], workers: set[int], expected: str
) -> None:
    assert set(by_worker) == workers, "a worker answered nothing"
    for pid, answers in by_worker.items():
        late = [reason for at, reason in answers if at >= 1.0]
        assert late and set(late) == {expected}, (pid, answers)


def test_a_promotion_is_applied_by_every_worker_within_a_second(server: Server) -> None:
    deployer = bearer(sign_in(server, "deployer")["access_token"])
    sessions = sessions_across_workers(server)
    _, before = send(server, "GET", "/api/models/digits/deployment", headers=deployer)
    revision = before.headers["ETag"]

    _, promoted = send(
        server,
        "POST",
        "/api/models/digits/promote",
        headers={**deployer, "If-Match": revision},
        json={"version": 2},
    )
    changed_at = time.monotonic()

    assert promoted.status_code == 200, promoted.text
    by_worker = _route_reasons_after(server, sessions, deployer, changed_at)
    _assert_applied_within_a_second(by_worker, server.worker_pids(), "stable")


def test_a_change_through_one_replica_is_applied_by_the_other_within_a_second(
    replicas: tuple[Server, Server],
) -> None:
    first, second = replicas
    deployer = bearer(sign_in(first, "deployer")["access_token"])
    sessions = sessions_across_workers(second)
    send(first, "POST", "/api/models/digits/promote", headers=deployer, json={"version": 2})

    _, canary = send(
        first,
        "PUT",
        "/api/models/digits/experiment",
        headers=deployer,
        json={
            "name": "solo",
            "sticky": "header:X-User",
            "variants": [
                {"name": "a", "version": 2, "weight": 50},
                {"name": "b", "version": 2, "weight": 50},
            ],
        },
    )
    changed_at = time.monotonic()

    assert canary.status_code == 200, canary.text
    by_worker = _route_reasons_after(second, sessions, deployer, changed_at)
    _assert_applied_within_a_second(by_worker, second.worker_pids(), "experiment")

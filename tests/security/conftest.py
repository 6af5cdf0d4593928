"""Shared tools of the attack suite: forged tokens, API keys, throwaway PostgreSQL databases."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
import uuid
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from accounts.models import User
from extensions import db
from tests.conftest import assert_error

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379"


def assert_unauthorized(response: TestResponse) -> dict[str, Any]:
    """401 in the envelope, with the Bearer challenge: what every refused credential gets."""
    body = assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer"), response.headers
    return body


def user_id(app: Flask, username: str) -> int:
    with app.app_context():
        found = db.session.scalar(sa.select(User.id).filter_by(username=username))
        assert found is not None
        return int(found)


def claims_for(app: Flask, username: str, **overrides: Any) -> dict[str, Any]:
    """The claims /auth/token would put in an access token, with ``overrides`` applied (a
    value of ``None`` removes the claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": f"user:{user_id(app, username)}",
        "type": "access",
        "fresh": False,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 900,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def forge(app: Flask, claims: dict[str, Any], *, key: str | None = None, alg: str = "HS256") -> str:
    """A token signed with the app's secret (or ``key``) and algorithm ``alg``."""
    with warnings.catch_warnings():
        # HS384/HS512 warn that the testing secret is short for them; the attacker does not care.
        warnings.simplefilter("ignore", pyjwt.warnings.InsecureKeyLengthWarning)
        return pyjwt.encode(claims, key or app.config["JWT_SECRET_KEY"], algorithm=alg)


def unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    """A token with ``alg: none`` and no signature, as an attacker writes it by hand."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def png_header(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG that claim a ``width`` x ``height`` grey canvas."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))


def create_key(admin: FlaskClient, **fields: Any) -> tuple[int, str]:
    """Create an API key through the admin API; returns its id and the secret shown once."""
    response = admin.post("/api/keys", json={"name": "app", **fields})
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    return int(body["id"]), str(body["key"])


def dispose(*apps: Flask) -> None:
    """Close the connections an app holds (its database and its SQL rate-limit storage), so a
    throwaway database can be dropped and no connection is left to the garbage collector."""
    for app in apps:
        with app.app_context():
            db.engine.dispose()
        engine = getattr(app.extensions["modelgate.limiter"].storage, "_engine", None)
        if engine is not None:
            engine.dispose()


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def throwaway_pg_database() -> Iterator[str]:
    """A PostgreSQL database of its own, dropped afterwards; yields its SQLAlchemy URL."""
    if not reachable("127.0.0.1", 5432):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"mg_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_database() -> Iterator[str]:
    with throwaway_pg_database() as url:
        yield url


@contextmanager
def redis_limit_settings() -> Iterator[dict[str, str]]:
    """Rate-limit settings on the local Redis under a key prefix of their own; only keys with
    that prefix are deleted afterwards (nothing else in Redis is touched)."""
    if not reachable("127.0.0.1", 6379):
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    import redis

    settings = {
        "RATELIMIT_STORAGE_URI": f"{REDIS_URL}/7",
        "RATELIMIT_KEY_PREFIX": f"mgtest{secrets.token_hex(6)}",
    }
    try:
        yield settings
    finally:
        connection = redis.Redis.from_url(settings["RATELIMIT_STORAGE_URI"])
        try:
            keys = list(connection.scan_iter(match=f"*{settings['RATELIMIT_KEY_PREFIX']}*"))
            if keys:
                connection.delete(*keys)
        finally:
            connection.close()


@pytest.fixture
def redis_limits() -> Iterator[dict[str, str]]:
    with redis_limit_settings() as settings:
        yield settings


def flask_cli(database_uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``flask --app app ...`` as `make run` does, in a process of its own (Alembic's
    env.py reconfigures logging, which must not leak into the test process)."""
    env = {
        **clean_environ(),
        "MODELGATE_SQLALCHEMY_DATABASE_URI": database_uri,
        "MODELGATE_JWT_SECRET_KEY": secrets.token_urlsafe(48),
    }
    return subprocess.run(
        [str(Path(sys.executable).with_name("flask")), "--app", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def clean_environ() -> dict[str, str]:
    """This process's environment without settings that would steer a server under test."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MODELGATE_") and k != "DATABASE_URL"
    }

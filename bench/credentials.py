"""Credentials for the benchmark's own server: a throwaway database, an admin, an API key.

Every prediction route needs a principal, and the state behind it (users, keys, rate-limit
counters, usage) lives in the database. The benchmark never touches ``instance/``: it migrates
a fresh SQLite file in its temp directory, creates an admin there with the ``flask users`` CLI,
and, once the server answers, signs in and creates the API key the clients send.
"""

from __future__ import annotations

import http.client
import json
import secrets
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.loadgen import HOST, REQUEST_TIMEOUT_SECONDS

CLI_TIMEOUT_SECONDS = 120
USERNAME = "bench-admin"
# Limits the benchmark sets so they never trigger: the limiter still counts every request,
# so its cost is measured, but no client is ever answered 429.
UNREACHABLE_LIMIT = "1000000000 per minute"


def server_env(database: Path) -> dict[str, str]:
    """The MODELGATE_* settings that point the server at the throwaway state."""
    return {
        "MODELGATE_SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
        # A signing key for this run only; tokens signed with it die with the temp database.
        "MODELGATE_JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "MODELGATE_RATELIMIT_PER_IP": UNREACHABLE_LIMIT,
        "MODELGATE_RATELIMIT_PER_PRINCIPAL": UNREACHABLE_LIMIT,
    }


def _flask(flask: Path, cwd: Path, env: Mapping[str, str], *args: str) -> None:
    try:
        done = subprocess.run(
            [str(flask), "--app", "app", *args],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"`flask {' '.join(args[:2])}` took over {err.timeout}s") from err
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-2000:]
        raise RuntimeError(f"`flask {' '.join(args[:2])}` failed:\n{output}")


def prepare_database(flask: Path, cwd: Path, env: Mapping[str, str]) -> tuple[str, str]:
    """Migrate the database ``env`` names and create an admin in it; returns its login."""
    password = secrets.token_urlsafe(24)
    _flask(flask, cwd, env, "db", "upgrade")
    _flask(flask, cwd, env, "users", "create", USERNAME, "--role", "admin", "--password", password)
    return USERNAME, password


def _call(
    port: int, path: str, payload: Mapping[str, Any], headers: Mapping[str, str]
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", **headers},
        )
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, body[:300].decode("utf-8", "replace")


def auth_headers(port: int, login: tuple[str, str], mode: str) -> dict[str, str]:
    """Headers that authenticate the clients: an API key (``key``, what an application
    sends) or the admin's bearer token (``token``, valid 15 minutes by default)."""
    username, password = login
    status, body = _call(port, "/auth/token", {"username": username, "password": password}, {})
    if status != 200 or not isinstance(body, dict) or "access_token" not in body:
        raise RuntimeError(f"signing in as {username} failed: {status} {body}")
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    if mode == "token":
        return bearer
    key_request = {
        "name": "bench",
        "role": "predictor",
        "scopes": ["infer:*"],
        "rate_limit": UNREACHABLE_LIMIT,
    }
    status, body = _call(port, "/api/keys", key_request, bearer)
    if status != 201 or not isinstance(body, dict) or "key" not in body:
        raise RuntimeError(f"creating an API key failed: {status} {body}")
    return {"X-API-Key": str(body["key"])}

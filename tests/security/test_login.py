"""Signing in, refreshing, signing out, exchanging an API key, and limits on guessing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import PASSWORD, assert_error
from tests.security.conftest import assert_unauthorized, bearer, create_key

MakeApp = Callable[..., Flask]


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD, **environ: str) -> Any:
    return client.post(
        "/auth/token",
        json={"username": username, "password": password},
        environ_overrides=environ,
    )


def test_sign_in_gives_access_and_refresh_tokens_that_work(anon_client: FlaskClient) -> None:
    response = sign_in(anon_client, "viewer")

    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert response.headers["Cache-Control"] == "no-store"
    assert anon_client.get("/api/models", headers=bearer(body["access_token"])).status_code == 200
    assert_unauthorized(anon_client.get("/api/models", headers=bearer(body["refresh_token"])))


def test_issued_tokens_use_the_pinned_algorithm_and_carry_every_required_claim(
    anon_client: FlaskClient,
) -> None:
    tokens = sign_in(anon_client, "viewer").get_json()

    for token, kind in ((tokens["access_token"], "access"), (tokens["refresh_token"], "refresh")):
        assert pyjwt.get_unverified_header(token)["alg"] == "HS256"
        claims = pyjwt.decode(token, options={"verify_signature": False})
        assert {"exp", "iat", "nbf", "jti", "sub", "type"} <= set(claims)
        assert claims["type"] == kind
        assert claims["sub"].startswith("user:")


def test_refresh_gives_a_new_access_token_only(anon_client: FlaskClient) -> None:
    refresh = sign_in(anon_client, "viewer").get_json()["refresh_token"]

    response = anon_client.post("/auth/refresh", headers=bearer(refresh))

    assert response.status_code == 200
    body = response.get_json()
    assert "refresh_token" not in body
    assert anon_client.get("/api/models", headers=bearer(body["access_token"])).status_code == 200


def test_logout_without_refresh_token_revokes_only_the_access_token(
    anon_client: FlaskClient,
) -> None:
    tokens = sign_in(anon_client, "viewer").get_json()

    assert (
        anon_client.post("/auth/logout", headers=bearer(tokens["access_token"])).status_code == 204
    )

    assert_unauthorized(anon_client.get("/api/models", headers=bearer(tokens["access_token"])))
    assert (
        anon_client.post("/auth/refresh", headers=bearer(tokens["refresh_token"])).status_code
        == 200
    )


def test_logout_refuses_to_revoke_someone_elses_refresh_token(anon_client: FlaskClient) -> None:
    mine = sign_in(anon_client, "viewer").get_json()
    theirs = sign_in(anon_client, "admin").get_json()

    response = anon_client.post(
        "/auth/logout",
        headers=bearer(mine["access_token"]),
        json={"refresh_token": theirs["refresh_token"]},
    )

    assert_error(response, 403, "forbidden")
    assert (
        anon_client.post("/auth/refresh", headers=bearer(theirs["refresh_token"])).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("username", "password"),
    [("viewer", "wrong password!"), ("nobody", PASSWORD), ("nobody", "wrong password!")],
)
def test_unknown_user_and_wrong_password_get_the_same_answer(
    app: Flask, anon_client: FlaskClient, username: str, password: str
) -> None:
    reference = assert_unauthorized(sign_in(anon_client, "predictor", "wrong password!"))

    body = assert_unauthorized(sign_in(anon_client, username, password))

    assert {**body, "request_id": ""} == {**reference, "request_id": ""}


def test_disabled_user_cannot_sign_in_and_is_told_nothing_more(
    anon_client: FlaskClient, client: FlaskClient
) -> None:
    reference = assert_unauthorized(sign_in(anon_client, "nobody"))
    users = client.get("/api/users").get_json()
    viewer = next(u for u in users if u["username"] == "viewer")
    client.patch(f"/api/users/{viewer['id']}", json={"disabled": True})

    body = assert_unauthorized(sign_in(anon_client, "viewer"))

    assert body["error"] == reference["error"]


def test_unknown_user_costs_as_much_time_as_a_wrong_password(anon_client: FlaskClient) -> None:
    def seconds(username: str) -> float:
        start = time.perf_counter()
        sign_in(anon_client, username, "wrong password!")
        return time.perf_counter() - start

    wrong_password = statistics.median(seconds("viewer") for _ in range(3))
    unknown_user = statistics.median(seconds(f"nobody{i}") for i in range(3))

    # The password hash is verified either way; an unknown user answering much faster would
    # tell an attacker which usernames exist.
    assert unknown_user > 0.5 * wrong_password


def test_sign_in_attempts_are_limited_per_user_whatever_the_client_ip(make_app: MakeApp) -> None:
    client = make_app(RATELIMIT_LOGIN_PER_USER="3 per minute").test_client()
    for i in range(3):
        assert sign_in(client, "viewer", "guess " * 3, REMOTE_ADDR=f"10.0.0.{i}").status_code == 401

    blocked = sign_in(client, "viewer", REMOTE_ADDR="10.0.0.99")

    assert_error(blocked, 429, "too_many_requests")
    assert int(blocked.headers["Retry-After"]) >= 1
    assert sign_in(client, "VIEWER", REMOTE_ADDR="10.0.0.98").status_code == 429
    assert sign_in(client, "predictor", REMOTE_ADDR="10.0.0.99").status_code == 200


def test_sign_in_attempts_are_limited_per_client_ip(make_app: MakeApp) -> None:
    client = make_app(RATELIMIT_LOGIN_PER_IP="3 per minute").test_client()
    for name in ("a", "b", "c"):
        assert sign_in(client, name, REMOTE_ADDR="10.0.0.1").status_code == 401

    assert_error(sign_in(client, "viewer", REMOTE_ADDR="10.0.0.1"), 429, "too_many_requests")
    assert sign_in(client, "viewer", REMOTE_ADDR="10.0.0.2").status_code == 200


def test_sign_in_with_missing_or_extra_fields(anon_client: FlaskClient) -> None:
    assert_unauthorized(anon_client.post("/auth/token", json={"username": "viewer"}))
    assert_unauthorized(anon_client.post("/auth/token"))
    response = anon_client.post(
        "/auth/token", json={"username": "viewer", "password": PASSWORD, "role": "admin"}
    )
    assert_error(response, 422, "invalid_input")


def test_api_key_is_exchanged_for_an_access_token_with_the_keys_rights(
    app: Flask, client: FlaskClient, anon_client: FlaskClient
) -> None:
    key_id, secret = create_key(client, scopes=["infer:tab"])

    response = anon_client.post("/auth/token", headers={"X-API-Key": secret})

    assert response.status_code == 200
    body = response.get_json()
    assert "refresh_token" not in body
    token = bearer(body["access_token"])
    assert anon_client.get("/api/models", headers=token).status_code == 200
    assert (
        anon_client.post(
            "/api/models/tab/predict", headers=token, json={"instances": [[1, 2, 3]]}
        ).status_code
        == 200
    )
    assert_error(anon_client.get("/api/users", headers=token), 403, "forbidden")
    assert_error(
        anon_client.post("/api/models/img/predict", headers=token, json={}), 403, "forbidden"
    )

    client.delete(f"/api/keys/{key_id}")

    assert_unauthorized(anon_client.get("/api/models", headers=token))
    assert_unauthorized(anon_client.post("/auth/token", headers={"X-API-Key": secret}))


@pytest.mark.parametrize("key", ["mg_nope_nope", "garbage", "mg__", ""])
def test_unknown_api_key_cannot_be_exchanged(anon_client: FlaskClient, key: str) -> None:
    assert_unauthorized(anon_client.post("/auth/token", headers={"X-API-Key": key}))


def test_api_key_cannot_sign_out(client: FlaskClient, anon_client: FlaskClient) -> None:
    _, secret = create_key(client)

    response = anon_client.post("/auth/logout", headers={"X-API-Key": secret})

    assert_error(response, 400, "bad_request")

"""API keys: shown once, stored hashed, revoked and rotated at once, usage counted, quotas."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from accounts.models import ApiKey
from extensions import db
from tests.conftest import assert_error, client_as
from tests.security.conftest import assert_unauthorized, create_key

MakeApp = Callable[..., Flask]
TAB = {"instances": [[1, 2, 3], [3, 2, 1]]}


def test_created_key_is_shown_once_and_never_listed(client: FlaskClient) -> None:
    response = client.post(
        "/api/keys",
        json={
            "name": "batch job",
            "scopes": ["infer:tab"],
            "rate_limit": "5/second",
            "daily_quota": 100,
        },
    )

    assert response.status_code == 201
    created = response.get_json()
    secret = created["key"]
    assert secret.startswith("mg_")
    assert created["scopes"] == ["infer:tab"]
    assert (created["rate_limit"], created["daily_quota"]) == ("5/second", 100)
    listed = client.get("/api/keys")
    one = client.get(f"/api/keys/{created['id']}")
    for answer in (listed, one):
        text = answer.get_data(as_text=True)
        assert secret.rsplit("_", 1)[1] not in text
        assert '"key"' not in text and "secret" not in text and "hash" not in text
    assert listed.get_json()[0]["name"] == "batch job"
    assert one.get_json()["prefix"] == created["prefix"]


def test_only_a_hash_of_the_secret_is_stored(app: Flask, client: FlaskClient) -> None:
    key_id, token = create_key(client)
    secret = token.split("_", 2)[2]

    with app.app_context():
        row = db.session.get(ApiKey, key_id)
        assert row is not None
        stored = " ".join(str(getattr(row, c.key)) for c in ApiKey.__table__.columns)
    assert secret not in stored
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()


def test_key_authenticates_as_x_api_key(client: FlaskClient, anon_client: FlaskClient) -> None:
    _, secret = create_key(client)

    assert anon_client.get("/api/models", headers={"X-API-Key": secret}).status_code == 200
    assert_unauthorized(anon_client.get("/api/models", headers={"X-API-Key": secret + "x"}))
    wrong_secret = secret.rsplit("_", 1)[0] + "_" + "A" * 43
    assert_unauthorized(anon_client.get("/api/models", headers={"X-API-Key": wrong_secret}))


def test_revoked_key_is_refused_at_once(client: FlaskClient, anon_client: FlaskClient) -> None:
    key_id, secret = create_key(client)
    assert anon_client.get("/api/models", headers={"X-API-Key": secret}).status_code == 200

    assert client.delete(f"/api/keys/{key_id}").status_code == 204

    assert_unauthorized(anon_client.get("/api/models", headers={"X-API-Key": secret}))
    assert client.get(f"/api/keys/{key_id}").get_json()["revoked_at"] is not None
    assert_error(client.post(f"/api/keys/{key_id}/rotate"), 409, "conflict")


def test_rotation_replaces_the_secret_and_keeps_the_rest(
    client: FlaskClient, anon_client: FlaskClient
) -> None:
    key_id, old = create_key(client, scopes=["infer:tab"], rate_limit="50/minute")
    anon_client.get("/api/models", headers={"X-API-Key": old})

    response = client.post(f"/api/keys/{key_id}/rotate")

    assert response.status_code == 200
    rotated = response.get_json()
    new = rotated["key"]
    assert new != old
    assert (rotated["id"], rotated["scopes"], rotated["rate_limit"]) == (
        key_id,
        ["infer:tab"],
        "50/minute",
    )
    assert rotated["usage"]["requests"] == 1
    assert_unauthorized(anon_client.get("/api/models", headers={"X-API-Key": old}))
    assert anon_client.get("/api/models", headers={"X-API-Key": new}).status_code == 200
    assert new.rsplit("_", 1)[1] not in client.get("/api/keys").get_data(as_text=True)


def test_usage_counts_requests_items_errors_and_last_use(
    client: FlaskClient, anon_client: FlaskClient
) -> None:
    key_id, secret = create_key(client)
    headers = {"X-API-Key": secret}
    assert client.get(f"/api/keys/{key_id}").get_json()["usage"] == {
        "requests": 0,
        "items": 0,
        "errors": 0,
        "last_used_at": None,
    }

    anon_client.post("/api/models/tab/predict", json=TAB, headers=headers)
    anon_client.post("/api/models/tab/predict", json={"instances": [[1, 2, 3]]}, headers=headers)
    anon_client.get("/api/models/nope", headers=headers)
    anon_client.get("/api/users", headers=headers)

    usage = client.get(f"/api/keys/{key_id}").get_json()["usage"]
    assert (usage["requests"], usage["items"], usage["errors"]) == (4, 3, 2)
    assert usage["last_used_at"] is not None
    assert client.get("/api/keys").get_json()[0]["usage"] == usage


@pytest.mark.parametrize(
    "extra",
    [
        {"id": 99},
        {"prefix": "chosen"},
        {"secret_hash": "0" * 64},
        {"key": "mg_chosen_secret"},
        {"created_by": "someone else"},
        {"revoked_at": None},
        {"usage": {"requests": 0}},
        {"requests": -100},
        {"role": "admin"},
        {"role": "deployer"},
        {"scopes": ["admin"]},
        {"scopes": ["infer:"]},
        {"rate_limit": "lots"},
        {"daily_quota": 0},
    ],
    ids=lambda extra: next(iter(extra)),
)
def test_key_creation_refuses_fields_a_client_must_not_set(
    client: FlaskClient, extra: dict[str, object]
) -> None:
    response = client.post("/api/keys", json={"name": "mass", **extra})

    assert_error(response, 422, "invalid_input")
    assert client.get("/api/keys").get_json() == []


@pytest.mark.parametrize(
    "extra",
    [{"id": 1}, {"disabled": True}, {"password_hash": "x"}, {"role": "root"}, {"is_admin": True}],
    ids=lambda extra: next(iter(extra)),
)
def test_user_creation_refuses_fields_a_client_must_not_set(
    client: FlaskClient, extra: dict[str, object]
) -> None:
    body = {"username": "mallory", "role": "viewer", "password": "p" * 12, **extra}

    assert_error(client.post("/api/users", json=body), 422, "invalid_input")
    assert "mallory" not in client.get("/api/users").get_data(as_text=True)


@pytest.mark.parametrize(
    "change",
    [{"username": "admin2"}, {"id": 7}, {"password_hash": "x"}, {"created_at": "2020-01-01"}],
)
def test_user_update_refuses_fields_a_client_must_not_set(
    app: Flask, client: FlaskClient, change: dict[str, object]
) -> None:
    users = client.get("/api/users").get_json()
    viewer = next(u for u in users if u["username"] == "viewer")

    assert_error(client.patch(f"/api/users/{viewer['id']}", json=change), 422, "invalid_input")
    assert client_as(app, "viewer").get("/api/models").status_code == 200


def test_daily_quota_refuses_requests_beyond_it(
    client: FlaskClient, anon_client: FlaskClient
) -> None:
    _, secret = create_key(client, daily_quota=3)
    headers = {"X-API-Key": secret}
    statuses = [anon_client.get("/api/models", headers=headers).status_code for _ in range(3)]

    refused = anon_client.get("/api/models", headers=headers)

    assert statuses == [200, 200, 200]
    assert_error(refused, 429, "too_many_requests")
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["Retry-After"]) > 3600  # the window is a day
    other_key = create_key(client)[1]
    assert anon_client.get("/api/models", headers={"X-API-Key": other_key}).status_code == 200


def test_keys_own_rate_limit_applies_instead_of_the_default(
    make_app: MakeApp,
) -> None:
    app = make_app(RATELIMIT_PER_PRINCIPAL="100 per minute")
    admin, anonymous = client_as(app, "admin"), app.test_client()
    _, secret = create_key(admin, rate_limit="2 per minute")
    headers = {"X-API-Key": secret}

    statuses = [anonymous.get("/api/models", headers=headers).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


def test_key_exchanged_token_is_bound_by_the_keys_limits(make_app: MakeApp) -> None:
    app = make_app()
    admin, anonymous = client_as(app, "admin"), app.test_client()
    _, secret = create_key(admin, rate_limit="2 per minute")
    token = anonymous.post("/auth/token", headers={"X-API-Key": secret}).get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    statuses = [anonymous.get("/api/models", headers=headers).status_code for _ in range(2)]
    statuses.append(anonymous.get("/api/models", headers={"X-API-Key": secret}).status_code)

    assert statuses == [200, 200, 429]
    with app.app_context():
        assert db.session.scalar(sa.select(ApiKey.requests)) == 3


def test_rotation_also_ends_tokens_exchanged_for_the_old_secret(
    client: FlaskClient, anon_client: FlaskClient
) -> None:
    key_id, old = create_key(client)
    exchanged = anon_client.post("/auth/token", headers={"X-API-Key": old}).get_json()
    headers = {"Authorization": f"Bearer {exchanged['access_token']}"}
    assert anon_client.get("/api/models", headers=headers).status_code == 200

    new = client.post(f"/api/keys/{key_id}/rotate").get_json()["key"]

    assert_unauthorized(anon_client.get("/api/models", headers=headers))
    renewed = anon_client.post("/auth/token", headers={"X-API-Key": new}).get_json()
    renewed_headers = {"Authorization": f"Bearer {renewed['access_token']}"}
    assert anon_client.get("/api/models", headers=renewed_headers).status_code == 200

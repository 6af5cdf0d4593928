"""Token attacks: every bad or no-longer-valid token is a 401 in the envelope with the Bearer
challenge, never a 422 or a 500."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from accounts.models import User
from app import create_app
from extensions import db
from serving.runtimes.fake import fake_factory
from tests.conftest import PASSWORD, assert_error, client_as, token_for
from tests.security.conftest import (
    assert_unauthorized,
    bearer,
    claims_for,
    dispose,
    forge,
    unsigned,
    user_id,
)

MakeApp = Callable[..., Flask]
PROTECTED = "/api/models"
WRONG_SECRET = "another-secret-that-is-also-long-enough-0123456789"


def login(client: FlaskClient, username: str = "viewer") -> dict[str, Any]:
    response = client.post("/auth/token", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def test_a_forged_valid_token_is_accepted_so_the_attacks_below_are_meaningful(
    app: Flask, anon_client: FlaskClient
) -> None:
    token = forge(app, claims_for(app, "viewer"))

    assert anon_client.get(PROTECTED, headers=bearer(token)).status_code == 200


BAD_TOKENS: dict[str, Callable[[Flask], str]] = {
    "alg none": lambda app: unsigned(claims_for(app, "admin")),
    "alg None": lambda app: unsigned(claims_for(app, "admin"), alg="None"),
    "alg none with a signature": lambda app: unsigned(claims_for(app, "admin")) + "c2ln",
    "HS512 with the right secret": lambda app: forge(app, claims_for(app, "admin"), alg="HS512"),
    "HS384 with the right secret": lambda app: forge(app, claims_for(app, "admin"), alg="HS384"),
    "wrong secret": lambda app: forge(app, claims_for(app, "admin"), key=WRONG_SECRET),
    "tampered subject": lambda app: _tamper(app, sub=f"user:{user_id(app, 'admin')}"),
    "tampered expiry": lambda app: _tamper(app, exp=int(time.time()) + 10**8),
    "signature stripped": lambda app: forge(app, claims_for(app, "viewer")).rsplit(".", 1)[0] + ".",
    "expired": lambda app: forge(app, claims_for(app, "viewer", exp=int(time.time()) - 5)),
    "not yet valid": lambda app: forge(app, claims_for(app, "viewer", nbf=int(time.time()) + 600)),
    "issued in the future": lambda app: forge(
        app, claims_for(app, "viewer", iat=int(time.time()) + 600)
    ),
    "refresh token as access": lambda app: forge(app, claims_for(app, "viewer", type="refresh")),
    "subject of no kind": lambda app: forge(app, claims_for(app, "viewer", sub="admin")),
    "subject of an unknown user": lambda app: forge(app, claims_for(app, "viewer", sub="user:999")),
    "subject of an unknown key": lambda app: forge(app, claims_for(app, "viewer", sub="key:999")),
    "subject not a string": lambda app: forge(app, claims_for(app, "viewer", sub=4)),
    "garbage": lambda app: "not.a.token",
    "empty payload": lambda app: forge(app, {}),
}
REQUIRED_CLAIMS = ("exp", "iat", "jti", "sub", "type")


def _tamper(app: Flask, **changes: Any) -> str:
    """A viewer's genuine token whose payload was edited afterwards (signature kept)."""
    genuine = forge(app, claims_for(app, "viewer"))
    header, _, signature = genuine.split(".")
    tampered = forge(app, claims_for(app, "viewer", **changes)).split(".")[1]
    return f"{header}.{tampered}.{signature}"


@pytest.mark.parametrize("attack", list(BAD_TOKENS))
def test_bad_token_is_refused_with_401_envelope_and_bearer_challenge(
    app: Flask, anon_client: FlaskClient, attack: str
) -> None:
    token = BAD_TOKENS[attack](app)

    for method, path in (("GET", PROTECTED), ("GET", "/api/users"), ("POST", "/auth/logout")):
        response = anon_client.open(path, method=method, headers=bearer(token))
        assert_unauthorized(response)


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_token_missing_a_required_claim_is_refused(
    app: Flask, anon_client: FlaskClient, claim: str
) -> None:
    token = forge(app, claims_for(app, "admin", **{claim: None}))

    assert_unauthorized(anon_client.get("/api/users", headers=bearer(token)))


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer a b", "Basic dXNlcjpwYXNz", "bearer x.y.z", "Token abc"],
)
def test_malformed_authorization_header_is_401(anon_client: FlaskClient, header: str) -> None:
    assert_unauthorized(anon_client.get(PROTECTED, headers={"Authorization": header}))


def test_missing_credentials_is_401_with_challenge(anon_client: FlaskClient) -> None:
    assert_unauthorized(anon_client.get(PROTECTED))


def test_forged_token_in_the_cookie_is_refused(app: Flask) -> None:
    client = app.test_client()
    client.set_cookie("access_token_cookie", unsigned(claims_for(app, "admin")))

    assert_unauthorized(client.get("/api/users"))


def test_cookie_token_without_csrf_header_cannot_post(app: Flask) -> None:
    client = app.test_client()
    client.set_cookie("access_token_cookie", forge(app, claims_for(app, "admin")))

    assert client.get("/api/users").status_code == 200
    assert_unauthorized(client.post("/api/keys", json={"name": "csrf"}))


def test_access_token_is_refused_at_refresh(app: Flask, anon_client: FlaskClient) -> None:
    tokens = login(anon_client)

    assert_unauthorized(anon_client.post("/auth/refresh", headers=bearer(tokens["access_token"])))
    forged_refresh_alg_none = unsigned(claims_for(app, "viewer", type="refresh"))
    assert_unauthorized(anon_client.post("/auth/refresh", headers=bearer(forged_refresh_alg_none)))


def test_tokens_are_refused_after_logout(anon_client: FlaskClient) -> None:
    tokens = login(anon_client)
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    assert anon_client.get(PROTECTED, headers=bearer(access)).status_code == 200

    response = anon_client.post(
        "/auth/logout", headers=bearer(access), json={"refresh_token": refresh}
    )

    assert response.status_code == 204
    assert_unauthorized(anon_client.get(PROTECTED, headers=bearer(access)))
    assert_unauthorized(anon_client.post("/auth/refresh", headers=bearer(refresh)))
    assert_unauthorized(anon_client.post("/auth/logout", headers=bearer(access)))


def test_a_password_change_ends_tokens_issued_before_it(
    anon_client: FlaskClient, client: FlaskClient
) -> None:
    tokens = login(anon_client)
    assert anon_client.get(PROTECTED, headers=bearer(tokens["access_token"])).status_code == 200
    time.sleep(1.1)  # token times are whole seconds; change the password in a later second

    changed = client.patch("/api/users/1", json={"password": "a brand new password 42"})

    assert changed.status_code == 200, changed.get_json()
    assert_unauthorized(anon_client.get(PROTECTED, headers=bearer(tokens["access_token"])))
    assert_unauthorized(anon_client.post("/auth/refresh", headers=bearer(tokens["refresh_token"])))
    fresh = anon_client.post(
        "/auth/token", json={"username": "viewer", "password": "a brand new password 42"}
    )
    assert (
        anon_client.get(PROTECTED, headers=bearer(fresh.get_json()["access_token"])).status_code
        == 200
    )


def _set_user(app: Flask, username: str, *, delete: bool = False) -> None:
    with app.app_context():
        user = db.session.scalar(sa.select(User).filter_by(username=username))
        assert user is not None
        if delete:
            db.session.delete(user)
        else:
            user.disabled = True
        db.session.commit()


@pytest.mark.parametrize("delete", [False, True], ids=["disabled", "deleted"])
def test_tokens_of_a_disabled_or_deleted_user_stop_working_at_once(
    app: Flask, anon_client: FlaskClient, delete: bool
) -> None:
    tokens = login(anon_client, "predictor")
    assert anon_client.get(PROTECTED, headers=bearer(tokens["access_token"])).status_code == 200

    _set_user(app, "predictor", delete=delete)

    assert_unauthorized(anon_client.get(PROTECTED, headers=bearer(tokens["access_token"])))
    assert_unauthorized(anon_client.post("/auth/refresh", headers=bearer(tokens["refresh_token"])))
    assert_unauthorized(
        anon_client.post("/auth/token", json={"username": "predictor", "password": "x" * 12})
    )


def test_a_role_change_applies_to_tokens_already_issued(app: Flask, client: FlaskClient) -> None:
    deployer = client_as(app, "deployer")
    tab = {"instances": [[1, 2, 3]]}
    assert deployer.post("/api/models/tab/predict", json=tab).status_code == 200

    client.patch(f"/api/users/{user_id(app, 'deployer')}", json={"role": "viewer"})

    assert_error(deployer.post("/api/models/tab/predict", json=tab), 403, "forbidden")
    assert deployer.get(PROTECTED).status_code == 200


def _another_process(app: Flask, repo: Path) -> Flask:
    """A new app on the same database: another worker or replica, or the server restarted."""
    return create_app(
        {
            "TESTING": True,
            "MODEL_ROOT": str(repo),
            "LOAD_MODELS_IN_BACKGROUND": False,
            "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        },
        runtime_factories={"fake": fake_factory},
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


def test_logout_and_disabling_reach_other_processes_and_survive_a_restart(
    make_app: MakeApp, repo: Path, shared_database: str
) -> None:
    first = make_app(SQLALCHEMY_DATABASE_URI=shared_database)
    apps = [first, _another_process(first, repo)]
    try:
        viewer = login(first.test_client(), "viewer")["access_token"]
        predictor = token_for(first, "predictor")
        assert apps[1].test_client().get(PROTECTED, headers=bearer(viewer)).status_code == 200

        first.test_client().post("/auth/logout", headers=bearer(viewer))
        client_as(first, "admin").patch(
            f"/api/users/{user_id(first, 'predictor')}", json={"disabled": True}
        )
        apps.append(_another_process(first, repo))

        for other in apps[1:]:
            for token in (viewer, predictor):
                assert_unauthorized(other.test_client().get(PROTECTED, headers=bearer(token)))
    finally:
        dispose(*apps)


def test_two_sign_outs_of_one_token_at_once_both_succeed(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second sign-out inserts the jti the first one just stored: it retries, not 500s."""
    from accounts.auth import revoke_and_commit
    from accounts.models import RevokedToken

    now = int(time.time())
    access = {"jti": "same-token", "exp": now + 60}
    refresh = {"jti": "its-refresh-token", "exp": now + 600}
    with app.app_context():
        revoke_and_commit(access)  # the first sign-out
        real_get = db.session.get
        calls = iter([None])  # the second one checked before the first committed

        def stale_get(model: Any, key: Any) -> Any:
            return next(calls, real_get(model, key))

        monkeypatch.setattr(db.session, "get", stale_get)
        revoke_and_commit(access, refresh)
        monkeypatch.undo()
        stored = set(db.session.scalars(sa.select(RevokedToken.jti)))
    assert stored == {"same-token", "its-refresh-token"}

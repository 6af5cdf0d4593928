"""Who may call what: every operation of the OpenAPI spec against every role and none, the
route inventory (nothing reachable without credentials outside an allowlist) and scopes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from accounts.auth import public
from accounts.security import ROLES
from tests.conftest import PASSWORD, assert_error, client_as
from tests.security.conftest import assert_unauthorized, create_key

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
PUBLIC, AUTHENTICATED, REFRESH = "public", "authenticated", "refresh token"
# The weakest role holding each permission; ROLES is ordered from weakest to strongest.
WEAKEST_ROLE = {
    "models:read": "viewer",
    "infer": "predictor",
    "deploy": "deployer",
    "admin": "admin",
}

# What each documented operation needs, written down independently of the code's decorators.
# A new operation fails test_the_table_lists_exactly_the_operations_of_the_spec until added.
NEEDS: dict[tuple[str, str], str] = {
    ("post", "/auth/token"): PUBLIC,
    ("post", "/auth/refresh"): REFRESH,
    ("post", "/auth/logout"): AUTHENTICATED,
    ("get", "/api/models"): "models:read",
    ("get", "/api/models/{name}"): "models:read",
    ("post", "/api/models/{name}/predict"): "infer",
    ("post", "/api/models/{name}/versions/{version}/predict"): "infer",
    ("get", "/v2"): "models:read",
    ("get", "/v2/health/live"): PUBLIC,
    ("get", "/v2/health/ready"): PUBLIC,
    ("get", "/v2/models/{name}"): "models:read",
    ("get", "/v2/models/{name}/versions/{version}"): "models:read",
    ("get", "/v2/models/{name}/ready"): "models:read",
    ("get", "/v2/models/{name}/versions/{version}/ready"): "models:read",
    ("post", "/v2/models/{name}/infer"): "infer",
    ("post", "/v2/models/{name}/versions/{version}/infer"): "infer",
    ("get", "/api/users"): "admin",
    ("post", "/api/users"): "admin",
    ("patch", "/api/users/{user_id}"): "admin",
    ("get", "/api/keys"): "admin",
    ("post", "/api/keys"): "admin",
    ("get", "/api/keys/{key_id}"): "admin",
    ("delete", "/api/keys/{key_id}"): "admin",
    ("post", "/api/keys/{key_id}/rotate"): "admin",
    ("post", "/api/models/{name}/labels/{label}/predict"): "infer",
    ("get", "/api/models/{name}/deployment"): "models:read",
    ("put", "/api/models/{name}/deployment"): "deploy",
    ("post", "/api/models/{name}/promote"): "deploy",
    ("post", "/api/models/{name}/rollback"): "deploy",
    ("put", "/api/models/{name}/canary"): "deploy",
    ("delete", "/api/models/{name}/canary"): "deploy",
    ("put", "/api/models/{name}/experiment"): "deploy",
    ("delete", "/api/models/{name}/experiment"): "deploy",
    ("put", "/api/models/{name}/shadow"): "deploy",
    ("delete", "/api/models/{name}/shadow"): "deploy",
    ("get", "/api/audit"): "deploy",
    ("post", "/api/feedback"): "infer",
    ("get", "/api/models/{name}/experiment/report"): "models:read",
    ("post", "/api/models/{name}/versions"): "admin",
    ("post", "/v2/models/{name}/labels/{label}/infer"): "infer",
    ("get", "/v2/models/{name}/stats"): "models:read",
    ("get", "/api/models/{name}/versions/{version}/artifact"): "infer",
    ("post", "/api/models/{name}/optimize"): "admin",
    ("post", "/api/jobs"): "infer",
    ("get", "/api/jobs"): "infer",
    ("get", "/api/jobs/{job_id}"): "infer",
    ("delete", "/api/jobs/{job_id}"): "infer",
    ("get", "/api/jobs/{job_id}/results"): "infer",
}

# Endpoints anyone may reach: the spec, the docs and their assets, the landing page, health,
# and signing in.
PUBLIC_ENDPOINTS = {
    "static",
    "api-docs.openapi_json",
    "api-docs.openapi_swagger_ui",
    "pages.index",
    "pages.login",  # the sign-in page
    "pages.logout",  # clears the browser's cookies; revokes their token given the page's CSRF value
    "v2.Live",
    "v2.Ready",
    "auth.Token",
}
PATH_VALUES = {
    "name": "tab",
    "version": "1",
    "user_id": "1",
    "key_id": "1",
    "label": "stable",
    "job_id": "0" * 32,
}
# Bodies are sent empty, except where the operation checks credentials in its body.
BODIES = {("post", "/auth/token"): {"username": "viewer", "password": PASSWORD}}


def spec_of(client: FlaskClient) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(client.get("/openapi.json").get_data(as_text=True))
    return spec


def spec_operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if method in HTTP_METHODS
    }


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)


def call(client: FlaskClient, method: str, path: str) -> Any:
    body = BODIES.get((method, path), {})
    return client.open(concrete(path), method=method.upper(), json=body)


def test_the_table_lists_exactly_the_operations_of_the_spec(anon_client: FlaskClient) -> None:
    assert set(spec_operations(spec_of(anon_client))) == set(NEEDS)


@pytest.mark.parametrize(("method", "path"), sorted(NEEDS))
def test_operation_answers_each_role_as_its_permission_says(
    app: Flask, method: str, path: str
) -> None:
    needs = NEEDS[(method, path)]
    got: dict[str, int] = {}
    for role in (None, *ROLES):
        response = call(client_as(app, role), method, path)
        got[str(role)] = response.status_code
        if response.status_code == 401:
            assert_unauthorized(response)
        elif response.status_code == 403:
            assert_error(response, 403, "forbidden")

    assert (got["None"] != 401) == (needs == PUBLIC), got
    for role in ROLES:
        allowed = needs in (PUBLIC, AUTHENTICATED) or (
            needs in WEAKEST_ROLE and ROLES.index(role) >= ROLES.index(WEAKEST_ROLE[needs])
        )
        if needs == REFRESH:
            # An access token is not a refresh token, whatever the role.
            assert got[role] == 401, got
        elif allowed:
            assert got[role] not in (401, 403), (role, got)
        else:
            assert got[role] == 403, (role, got)


def test_every_route_outside_the_allowlist_needs_credentials(app: Flask) -> None:
    anonymous = app.test_client()
    assert {rule.endpoint for rule in app.url_map.iter_rules()} >= PUBLIC_ENDPOINTS, "stale entry"
    answered_without_credentials = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: PATH_VALUES.get(m.group(1), "x"), rule.rule)
        for method in sorted((rule.methods or set()) - {"OPTIONS"}):
            response = anonymous.open(url, method=method, json={})
            if response.status_code != 401 or "Bearer" not in response.headers["WWW-Authenticate"]:
                answered_without_credentials.append(f"{method} {url}: {response.status_code}")

    assert answered_without_credentials == []


def test_only_allowlisted_views_are_marked_public(app: Flask) -> None:
    marked = set()
    for endpoint, view in app.view_functions.items():
        view_class = getattr(view, "view_class", None)
        handlers = [getattr(view_class, m, None) for m in HTTP_METHODS] if view_class else [view]
        if any(getattr(h, "_modelgate_public", False) for h in handlers):
            marked.add(endpoint)

    # /auth/refresh passes the access-token gate and checks the refresh token itself.
    assert marked <= PUBLIC_ENDPOINTS | {"auth.Refresh"}


def test_a_new_route_without_a_declared_permission_is_admin_only(app: Flask) -> None:
    app.add_url_rule("/api/forgotten", "forgotten", lambda: {"secret": True})
    app.add_url_rule("/api/open", "open", public(lambda: {"open": True}))

    assert_unauthorized(app.test_client().get("/api/forgotten"))
    for role in ("viewer", "predictor", "deployer"):
        assert_error(client_as(app, role).get("/api/forgotten"), 403, "forbidden")
    assert client_as(app, "admin").get("/api/forgotten").status_code == 200
    assert app.test_client().get("/api/open").status_code == 200


def test_spec_declares_security_on_every_protected_operation(anon_client: FlaskClient) -> None:
    spec = spec_of(anon_client)
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert spec["security"], "no global security requirement"

    for key, operation in spec_operations(spec).items():
        effective = operation.get("security", spec["security"])
        anonymous_allowed = effective == [] or {} in effective
        assert anonymous_allowed == (NEEDS[key] == PUBLIC), key
        for requirement in effective:
            assert set(requirement) <= set(schemes), key


def test_documented_public_operations_are_the_ones_that_answer_anonymously(
    anon_client: FlaskClient,
) -> None:
    spec = spec_of(anon_client)
    for (method, path), operation in spec_operations(spec).items():
        effective = operation.get("security", spec["security"])
        anonymous_allowed = effective == [] or {} in effective
        status = call(anon_client, method, path).status_code
        assert (status != 401) == anonymous_allowed, (method, path)


@pytest.fixture
def scoped_predictor(app: Flask, client: FlaskClient) -> FlaskClient:
    created = client.post(
        "/api/users",
        json={
            "username": "tabonly",
            "role": "predictor",
            "scopes": ["infer:tab"],
            "password": "p" * 12,
        },
    )
    assert created.status_code == 201
    return client_as(app, "tabonly")


INFER_ON = {
    "own predict": ("/api/models/{}/predict", {"instances": [[1, 2, 3]]}),
    "own pinned": ("/api/models/{}/versions/1/predict", {"instances": [[1, 2, 3]]}),
    "v2 infer": (
        "/v2/models/{}/infer",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]},
    ),
    "v2 pinned": (
        "/v2/models/{}/versions/1/infer",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]},
    ),
}


@pytest.mark.parametrize("route", list(INFER_ON))
def test_user_scoped_to_one_model_cannot_infer_on_another(
    scoped_predictor: FlaskClient, route: str
) -> None:
    path, body = INFER_ON[route]

    assert scoped_predictor.post(path.format("tab"), json=body).status_code == 200
    assert_error(scoped_predictor.post(path.format("img"), json=body), 403, "forbidden")
    assert scoped_predictor.get("/api/models/img").status_code == 200  # reading is not inferring


@pytest.mark.parametrize("route", list(INFER_ON))
def test_key_scoped_to_one_model_cannot_infer_on_another(
    client: FlaskClient, anon_client: FlaskClient, route: str
) -> None:
    path, body = INFER_ON[route]
    _, secret = create_key(client, scopes=["infer:tab"])
    headers = {"X-API-Key": secret}

    assert anon_client.post(path.format("tab"), json=body, headers=headers).status_code == 200
    response = anon_client.post(path.format("img"), json=body, headers=headers)
    assert_error(response, 403, "forbidden")


def test_viewer_key_cannot_infer_at_all(client: FlaskClient, anon_client: FlaskClient) -> None:
    _, secret = create_key(client, role="viewer", scopes=["infer:*"])
    headers = {"X-API-Key": secret}

    assert anon_client.get("/api/models", headers=headers).status_code == 200
    response = anon_client.post(
        "/api/models/tab/predict", json={"instances": [[1, 2, 3]]}, headers=headers
    )
    assert_error(response, 403, "forbidden")
    assert_error(anon_client.get("/api/keys", headers=headers), 403, "forbidden")

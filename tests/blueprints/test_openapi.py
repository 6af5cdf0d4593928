from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import client_as

MakeApp = Callable[..., Flask]

_HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def spec_of(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = json.loads(response.get_data(as_text=True))
    return spec


def api_rules(app: Flask) -> dict[str, set[str]]:
    """The app's /api, /auth and /v2 routes in OpenAPI spelling, with their methods."""
    rules: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/api/", "/auth/", "/v2")):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        methods = {m.lower() for m in rule.methods or ()} & _HTTP_METHODS
        rules.setdefault(path, set()).update(methods)
    return rules


def test_openapi_json_documents_every_route_and_method(app: Flask, client: FlaskClient) -> None:
    spec = spec_of(client)
    paths = spec["paths"]

    documented = {path: set(ops) & _HTTP_METHODS for path, ops in paths.items()}

    assert documented == api_rules(app)
    assert "/api/models/{name}/versions/{version}/predict" in documented  # <int:version>
    assert spec["openapi"] == "3.0.3"


def test_every_operation_has_a_summary_for_users(client: FlaskClient) -> None:
    paths = spec_of(client)["paths"]

    missing = [
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        for method, operation in operations.items()
        if method in _HTTP_METHODS and not operation.get("summary")
    ]

    assert missing == []


@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        ("/api/models/{name}/predict", {"404", "413", "415", "422", "503"}),
        ("/api/models/{name}/versions/{version}/predict", {"404", "413", "415", "422", "503"}),
        ("/v2/models/{name}/infer", {"404", "413", "422", "503"}),
    ],
)
def test_inference_routes_document_their_errors_with_the_envelope(
    client: FlaskClient, path: str, statuses: set[str]
) -> None:
    spec = spec_of(client)
    responses = spec["paths"][path]["post"]["responses"]

    assert statuses <= set(responses)
    for status in statuses:
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "code", "status"}


def test_docs_page_uses_only_vendored_swagger_ui_assets(client: FlaskClient) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) >= 3
    assert all(a.startswith("/static/vendor/swagger-ui/") for a in assets), assets
    assert not re.search(r"https?://", html)
    assert '"/openapi.json"' in html


def test_vendored_swagger_ui_assets_are_served(client: FlaskClient) -> None:
    html = client.get("/docs").get_data(as_text=True)

    for asset in re.findall(r'(?:src|href)="(/static/vendor/swagger-ui/[^"]+)"', html):
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.get_data()) > 1000, asset
        response.close()


def test_each_app_serves_its_own_openapi_spec(make_app: MakeApp) -> None:
    first = client_as(make_app(API_TITLE="first"), "admin")
    second = client_as(make_app(API_TITLE="second"), "admin")

    assert spec_of(first)["info"]["title"] == "first"
    assert spec_of(second)["info"]["title"] == "second"

"""Every answer carries the security headers and names no server software; the server refuses
to start outside testing without a long enough secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import ConfigurationError, create_app
from tests.conftest import client_as


@pytest.mark.parametrize(
    ("who", "path"),
    [
        ("admin", "/api/models"),
        ("admin", "/api/keys"),
        (None, "/api/users"),
        (None, "/v2/health/live"),
        ("admin", "/api/models/nope"),
        (None, "/openapi.json"),
    ],
)
def test_api_answers_carry_security_headers_and_no_store(
    app: Flask, who: str | None, path: str
) -> None:
    response = client_as(app, who).get(path)

    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" not in response.headers  # JSON, not a page


@pytest.mark.parametrize("path", ["/docs", "/"])
def test_html_pages_carry_a_content_security_policy(anon_client: FlaskClient, path: str) -> None:
    response = anon_client.get(path)

    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_only_swagger_ui_may_run_an_inline_script(anon_client: FlaskClient) -> None:
    docs = anon_client.get("/docs").headers["Content-Security-Policy"]
    page = anon_client.get("/login").headers["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline'" in docs
    assert "script-src 'self';" in page


def test_no_header_names_the_software_behind_the_server(app: Flask) -> None:
    answers = [
        client_as(app, who).open(path, method=method)
        for who, method, path in [
            (None, "GET", "/v2/health/live"),
            (None, "GET", "/api/models"),
            ("admin", "GET", "/nope"),
            ("admin", "DELETE", "/api/models"),
            ("admin", "GET", "/docs"),
        ]
    ]

    for response in answers:
        headers = str(response.headers).lower()
        assert not any(name in headers for name in ("werkzeug", "python", "flask", "gunicorn"))
        assert "X-Powered-By" not in response.headers


@pytest.mark.parametrize("secret", [None, "", "short", "x" * 31, "é" * 15])
def test_server_refuses_to_start_without_a_long_enough_secret(
    repo: Path, tmp_path: Path, secret: str | None
) -> None:
    config = {
        "TESTING": False,
        "MODEL_ROOT": str(repo),
        "JWT_SECRET_KEY": secret,
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db",
        "START_SERVING": False,
    }

    with pytest.raises(ConfigurationError, match="JWT_SECRET_KEY"):
        create_app(config)


def test_server_starts_with_a_32_byte_secret_outside_testing(repo: Path, tmp_path: Path) -> None:
    config = {
        "TESTING": False,
        "MODEL_ROOT": str(repo),
        "JWT_SECRET_KEY": "k" * 32,
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db",
        "START_SERVING": False,
    }

    app = create_app(config)

    assert not app.testing

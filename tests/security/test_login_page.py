"""The browser sign-in page: token in an HttpOnly cookie, CSRF token required to write."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import PASSWORD


def _cookies(response_headers: list[str]) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response_headers}


def test_signing_in_sets_an_httponly_samesite_cookie_and_reads_work(
    anon_client: FlaskClient,
) -> None:
    response = anon_client.post("/login", data={"username": "viewer", "password": PASSWORD})

    assert response.status_code == 302
    cookies = _cookies(response.headers.getlist("Set-Cookie"))
    access = cookies["access_token_cookie"]
    assert "HttpOnly" in access and "SameSite=Lax" in access
    assert "HttpOnly" not in cookies["csrf_access_token"]  # the page's script must read it
    assert anon_client.get("/api/models").status_code == 200


def test_a_cookie_without_the_csrf_header_cannot_write(anon_client: FlaskClient) -> None:
    anon_client.post("/login", data={"username": "admin", "password": PASSWORD})
    csrf = anon_client.get_cookie("csrf_access_token")
    assert csrf is not None

    refused = anon_client.post("/api/keys", json={"name": "app"})
    allowed = anon_client.post(
        "/api/keys", json={"name": "app"}, headers={"X-CSRF-TOKEN": csrf.value}
    )

    assert refused.status_code == 401
    assert allowed.status_code == 201


def test_a_wrong_password_shows_the_form_again_with_the_same_message(
    anon_client: FlaskClient,
) -> None:
    wrong = anon_client.post("/login", data={"username": "viewer", "password": "nope"})
    unknown = anon_client.post("/login", data={"username": "ghost", "password": "nope"})

    assert wrong.status_code == unknown.status_code == 401
    assert b"wrong username or password" in wrong.data
    assert wrong.data.replace(b"viewer", b"") == unknown.data.replace(b"ghost", b"")
    assert "access_token_cookie" not in _cookies(wrong.headers.getlist("Set-Cookie"))


def test_production_cookies_are_secure(make_app: Callable[..., Flask]) -> None:
    client = make_app(JWT_COOKIE_SECURE=True).test_client()
    response = client.post("/login", data={"username": "viewer", "password": PASSWORD})
    assert "Secure" in _cookies(response.headers.getlist("Set-Cookie"))["access_token_cookie"]

"""The web UI's pages through the Flask test client: navigation by role, the sign-in redirect
for browsers (API clients keep their 401), refusals, sign-in and sign-out, and the page's
contract with its scripts (no inline script, the limits and CSRF names it needs)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from html.parser import HTMLParser

import pytest
from flask import Flask
from flask.testing import FlaskClient

from accounts.security import ROLES
from tests.conftest import PASSWORD, assert_error, client_as
from tests.security.conftest import assert_unauthorized, claims_for, forge

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PAGES = ["/try", "/compare", "/models", "/rollouts", "/jobs", "/keys"]
NAV_BY_ROLE = {
    "viewer": ["Models", "API docs"],
    "predictor": ["Try a model", "Compare", "Models", "Jobs", "API docs"],
    "deployer": ["Try a model", "Compare", "Models", "Rollouts", "Jobs", "API docs"],
    "admin": ["Try a model", "Compare", "Models", "Rollouts", "Jobs", "API keys", "API docs"],
}
PAGE_NEEDS_ROLE = {
    "/models": "viewer",
    "/try": "predictor",
    "/compare": "predictor",
    "/jobs": "predictor",
    "/rollouts": "deployer",
    "/keys": "admin",
}


class _Page(HTMLParser):
    """The parts of a page the tests look at: navigation links, scripts, the body's data."""

    def __init__(self) -> None:
        super().__init__()
        self.nav: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.inline_scripts: list[str] = []
        self.body: dict[str, str | None] = {}
        self._in_nav = False
        self._in_link = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "nav":
            self._in_nav = True
        elif tag == "a" and self._in_nav:
            self._in_link = True
            self.nav.append("")
        elif tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True
        elif tag == "body":
            self.body = dict(attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav":
            self._in_nav = False
        elif tag == "a":
            self._in_link = False
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_link:
            self.nav[-1] += data.strip()
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


def parse(html: bytes) -> _Page:
    page = _Page()
    page.feed(html.decode())
    return page


def signed_in(app: Flask, username: str) -> FlaskClient:
    """A browser-like client signed in through the sign-in form (cookies)."""
    client = app.test_client()
    response = client.post("/login", data={"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.data
    return client


@pytest.mark.parametrize("role", ROLES)
def test_the_navigation_shows_only_what_the_role_may_use(app: Flask, role: str) -> None:
    response = client_as(app, role).get("/models", headers=HTML)

    assert response.status_code == 200
    assert parse(response.data).nav == NAV_BY_ROLE[role]


@pytest.mark.parametrize("path", PAGES)
def test_each_page_answers_the_roles_it_is_for_and_refuses_the_others(
    app: Flask, path: str
) -> None:
    weakest = ROLES.index(PAGE_NEEDS_ROLE[path])
    for role in ROLES:
        response = client_as(app, role).get(path, headers=HTML)
        expected = 200 if ROLES.index(role) >= weakest else 403
        assert response.status_code == expected, (role, path)
        assert response.mimetype == "text/html"


def test_a_refused_page_says_why_and_links_to_what_the_role_can_use(app: Flask) -> None:
    response = client_as(app, "viewer").get("/rollouts", headers=HTML)

    assert response.status_code == 403
    text = response.get_data(as_text=True)
    assert "Not allowed" in text and "this needs the &#39;deploy&#39; permission" in text
    assert parse(response.data).nav == NAV_BY_ROLE["viewer"]


def test_an_api_client_refused_a_page_gets_the_envelope(app: Flask) -> None:
    assert_error(client_as(app, "viewer").get("/rollouts"), 403, "forbidden")


@pytest.mark.parametrize("path", PAGES)
def test_a_browser_without_credentials_is_sent_to_sign_in_and_back(
    anon_client: FlaskClient, path: str
) -> None:
    response = anon_client.get(path + "?model=digits", headers=HTML)

    assert response.status_code == 302
    assert response.location == f"/login?next={path}?model%3Ddigits"


@pytest.mark.parametrize("path", PAGES)
def test_an_api_client_without_credentials_still_gets_the_401(
    anon_client: FlaskClient, path: str
) -> None:
    assert_unauthorized(anon_client.get(path))
    assert_unauthorized(anon_client.get(path, headers={"Accept": "application/json"}))


def test_an_expired_cookie_sends_the_browser_to_sign_in(app: Flask) -> None:
    client = app.test_client()
    expired = forge(app, claims_for(app, "admin", exp=int(time.time()) - 60))
    client.set_cookie("access_token_cookie", expired)

    response = client.get("/models", headers=HTML)

    assert response.status_code == 302
    assert response.location == "/login?next=/models"


@pytest.mark.parametrize(
    ("target", "lands_on"),
    [
        ("/compare?model=digits", "/compare?model=digits"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ],
)
def test_signing_in_returns_to_the_page_asked_for_on_this_site_only(
    anon_client: FlaskClient, target: str, lands_on: str
) -> None:
    response = anon_client.post(
        "/login", data={"username": "viewer", "password": PASSWORD, "next": target}
    )

    assert response.status_code == 302
    assert response.location == lands_on


def test_the_sign_in_form_carries_the_next_page(anon_client: FlaskClient) -> None:
    page = anon_client.get("/login?next=/jobs").get_data(as_text=True)

    assert '<input type="hidden" name="next" value="/jobs">' in page


def test_signing_out_revokes_the_cookie_token(app: Flask) -> None:
    client = signed_in(app, "predictor")
    access = client.get_cookie("access_token_cookie")
    csrf = client.get_cookie("csrf_access_token")
    assert access is not None and csrf is not None
    page = client.get("/models", headers=HTML).get_data(as_text=True)
    assert f'name="csrf_token" value="{csrf.value}"' in page  # the sign-out form's

    response = client.post("/logout", data={"csrf_token": csrf.value})

    assert response.status_code == 302 and response.location == "/login?signed_out=1"
    assert client.get_cookie("access_token_cookie") is None
    stolen = app.test_client()
    stolen.set_cookie("access_token_cookie", access.value)
    assert_unauthorized(stolen.get("/api/models"))


def test_a_sign_out_without_the_pages_csrf_value_only_clears_the_cookies(app: Flask) -> None:
    client = signed_in(app, "predictor")
    access = client.get_cookie("access_token_cookie")
    assert access is not None

    response = client.post("/logout", data={"csrf_token": "forged"})

    assert response.status_code == 302
    assert client.get_cookie("access_token_cookie") is None
    kept = app.test_client()
    kept.set_cookie("access_token_cookie", access.value)
    assert kept.get("/api/models").status_code == 200


def test_the_landing_page_knows_who_is_signed_in(app: Flask, anon_client: FlaskClient) -> None:
    assert parse(anon_client.get("/").data).nav == ["API docs"]

    page = signed_in(app, "deployer").get("/")

    assert parse(page.data).nav == NAV_BY_ROLE["deployer"]
    assert "Sign out" in page.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/", "/login", *PAGES])
def test_pages_load_scripts_only_from_this_site_and_hand_them_what_they_need(
    app: Flask, path: str
) -> None:
    response = client_as(app, "admin").get(path, headers=HTML)
    page = parse(response.data)

    assert page.inline_scripts == []
    assert all(re.fullmatch(r"/static/js/\w+\.js", s["src"] or "") for s in page.scripts)
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    if path not in ("/", "/login"):
        assert page.body["data-role"] == "admin"
        assert page.body["data-max-upload"] == str(app.config["MAX_CONTENT_LENGTH"])
        assert page.body["data-csrf-cookie"] == "csrf_access_token"
        assert page.body["data-csrf-header"] == "X-CSRF-TOKEN"


def test_too_many_sign_in_attempts_show_on_the_form(make_app: Callable[..., Flask]) -> None:
    client = make_app(RATELIMIT_LOGIN_PER_USER="2 per minute").test_client()
    for _ in range(2):
        client.post("/login", data={"username": "viewer", "password": "wrong"})

    response = client.post("/login", data={"username": "viewer", "password": PASSWORD})

    assert response.status_code == 429
    assert response.mimetype == "text/html"
    assert "Too many sign-in attempts" in response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) >= 1

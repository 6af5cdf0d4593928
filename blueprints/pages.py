"""HTML pages: the web UI over the JSON API.

Each page is a Jinja template plus one script under static/js/ that calls the same JSON API as
any client; a page only decides what to show. The server refuses what a role may not do
whatever a page shows: pages declare their permission like API views, and a browser without
valid credentials is sent to the sign-in page (``accounts.auth.page``).

The browser keeps its token in an HttpOnly cookie (flask-jwt-extended), with a CSRF token in a
second, script-readable cookie that state-changing requests must echo in X-CSRF-TOKEN;
SameSite=Lax, and Secure unless MODELGATE_JWT_COOKIE_SECURE=false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt as pyjwt
from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_jwt_extended import (
    create_access_token,
    decode_token,
    set_access_cookies,
    unset_jwt_cookies,
)
from flask_jwt_extended.exceptions import JWTExtendedException
from werkzeug.exceptions import TooManyRequests

from accounts.auth import authenticate, page, public, requires, revoke_and_commit
from accounts.security import Principal
from blueprints.auth import check_password
from blueprints.errors import ApiError, Forbidden, Unauthorized, error_response
from serving.errors import ServingError

bp = Blueprint("pages", __name__)


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: str
    permission: str
    summary: str


# The navigation, in order; each entry shows only to roles holding its permission.
NAV = (
    NavItem("pages.try_model", "Try a model", "infer", "Upload images, draw a digit or fill "
            "in features, and see what each version answers."),
    NavItem("pages.compare", "Compare", "infer", "One input on every ready version side by "
            "side, or on an ensemble."),
    NavItem("pages.models", "Models", "models:read", "Every model and version: state, format, "
            "size, accuracy, latency and traffic share."),
    NavItem("pages.rollouts", "Rollouts", "deploy", "Canary, promote, roll back, A/B "
            "experiments and shadows, with their report and the audit log."),
    NavItem("pages.jobs", "Jobs", "infer", "Run a zip of images or a JSONL file in the "
            "background and download the results."),
    NavItem("pages.keys", "API keys", "admin", "Create, rotate and revoke applications' keys "
            "and see their usage."),
)  # fmt: skip


def signed_in() -> Principal | None:
    """Who the browser is signed in as, on public pages too (where nothing authenticates)."""
    principal: Principal | None = g.get("principal")
    if principal is not None:
        return principal
    if not request.cookies.get(current_app.config["JWT_ACCESS_COOKIE_NAME"]):
        return None
    try:
        return authenticate()
    except (ApiError, ServingError, JWTExtendedException, pyjwt.PyJWTError):
        return None


@bp.context_processor
def _page_context() -> dict[str, Any]:
    principal = signed_in()
    nav = [item for item in NAV if principal is not None and principal.can(item.permission)]
    config = current_app.config
    return {
        "principal": principal,
        "nav": nav,
        "csrf_token": request.cookies.get(config["JWT_ACCESS_CSRF_COOKIE_NAME"], ""),
        "limits": {
            "upload_bytes": config["MAX_CONTENT_LENGTH"],
            "job_upload_bytes": config["JOB_MAX_UPLOAD_BYTES"],
            "items_per_request": config["MAX_ITEMS_PER_REQUEST"],
        },
        "csrf": {
            "cookie": config["JWT_ACCESS_CSRF_COOKIE_NAME"],
            "header": config["JWT_ACCESS_CSRF_HEADER_NAME"],
        },
    }


def _wants_html() -> bool:
    return request.accept_mimetypes.accept_html and request.method in ("GET", "HEAD")


@bp.errorhandler(Forbidden)
def _forbidden(error: Forbidden) -> Response | tuple[str, int]:
    # A browser gets a page that says so, with the navigation its role may use; an API
    # client the usual envelope.
    if not _wants_html():
        return error_response(error.status, error.code, error.message, error.details)
    return render_template("error.html", title="Not allowed", message=error.message), 403


@bp.errorhandler(TooManyRequests)
def _too_many(error: TooManyRequests) -> Response | tuple[str, int]:
    # Sign-in attempts are rate limited (per IP and per username): the form says so.
    if request.endpoint == "pages.login" and request.mimetype == (
        "application/x-www-form-urlencoded"
    ):
        message = "Too many sign-in attempts. Wait a minute, then try again."
        return render_template("login.html", error=message, next=_next_target()), 429
    if _wants_html():
        message = "Too many requests from you right now. Wait a moment, then reload the page."
        return render_template("error.html", title="Slow down", message=message), 429
    return error_response(429, "too_many_requests", str(error.description))


def _next_target() -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    target = request.values.get("next", "")
    parts = urlsplit(target)
    if (
        not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or parts.scheme
        or parts.netloc
    ):
        return url_for("pages.index")
    return target


@bp.get("/")
@public
def index() -> str:
    return render_template("index.html")


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Response | tuple[str, int] | str:
    if request.method == "GET":
        return render_template(
            "login.html", next=_next_target(), signed_out=request.args.get("signed_out")
        )
    try:
        user = check_password(request.form.get("username", ""), request.form.get("password", ""))
    except Unauthorized as err:
        return render_template("login.html", error=err.message, next=_next_target()), 401
    response = redirect(_next_target())
    set_access_cookies(response, create_access_token(identity=f"user:{user.id}"))
    return response


@bp.post("/logout")
@public
def logout() -> Response:
    """Sign out: revoke the cookie's token when the form proves it came from our page, and
    clear the cookies in any case (signing out must always work, even with a stale page)."""
    _revoke_cookie_token()
    response = redirect(url_for("pages.login", signed_out=1))
    unset_jwt_cookies(response)
    return response


def _revoke_cookie_token() -> None:
    raw = request.cookies.get(current_app.config["JWT_ACCESS_COOKIE_NAME"])
    sent = request.form.get("csrf_token", "")
    if not raw or not sent:
        return
    try:
        # Checks the signature, the expiry and that the form's CSRF value is this token's:
        # a cross-site form cannot know it, so it cannot revoke someone's token.
        claims = decode_token(raw, csrf_value=sent)
    except (JWTExtendedException, pyjwt.PyJWTError):
        return
    revoke_and_commit(claims)


@bp.get("/try")
@page
@requires("infer")
def try_model() -> str:
    return render_template("try.html")


@bp.get("/compare")
@page
@requires("infer")
def compare() -> str:
    return render_template("compare.html")


@bp.get("/models")
@page
@requires("models:read")
def models() -> str:
    return render_template("models.html")


@bp.get("/rollouts")
@page
@requires("deploy")
def rollouts() -> str:
    return render_template("rollouts.html")


@bp.get("/jobs")
@page
@requires("infer")
def jobs() -> str:
    return render_template("jobs.html")


@bp.get("/keys")
@page
@requires("admin")
def keys() -> str:
    return render_template("keys.html")

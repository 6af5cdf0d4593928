"""HTML pages: the public landing page and the sign-in page.

The browser keeps its token in an HttpOnly cookie (flask-jwt-extended), with a CSRF token in a
second, script-readable cookie that state-changing requests must echo in X-CSRF-TOKEN;
SameSite=Lax, and Secure unless MODELGATE_JWT_COOKIE_SECURE=false.
"""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask_jwt_extended import create_access_token, set_access_cookies, unset_jwt_cookies

from accounts.auth import public
from blueprints.auth import check_password
from blueprints.errors import Unauthorized

bp = Blueprint("pages", __name__)


@bp.get("/")
@public
def index() -> str:
    return render_template("index.html")


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Response | tuple[str, int] | str:
    if request.method == "GET":
        return render_template("login.html")
    try:
        user = check_password(request.form.get("username", ""), request.form.get("password", ""))
    except Unauthorized as err:
        return render_template("login.html", error=err.message), 401
    response = redirect(url_for("pages.index"))
    set_access_cookies(response, create_access_token(identity=f"user:{user.id}"))
    return response


@bp.post("/logout")
@public
def logout() -> Response:
    # Clearing the cookies needs no credentials; revoking the token is /auth/logout's job.
    response = redirect(url_for("pages.login"))
    unset_jwt_cookies(response)
    return response

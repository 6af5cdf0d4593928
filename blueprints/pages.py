"""HTML pages. The full browser UI comes with its own issue; this is the public landing page."""

from __future__ import annotations

from flask import Blueprint, render_template

from accounts.auth import public

bp = Blueprint("pages", __name__)


@bp.get("/")
@public
def index() -> str:
    return render_template("index.html")

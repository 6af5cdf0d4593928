"""HTML pages. The full upload UI comes with its own issue; this is the landing page."""

from __future__ import annotations

from flask import Blueprint, render_template

from extensions import inference_service
from serving.registry import describe_model

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    models = [describe_model(m) for m in inference_service().models()]
    return render_template("index.html", models=models)

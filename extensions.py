"""Per-app extension objects and the helper views use to reach the serving core."""

from __future__ import annotations

from flask import Flask, current_app

from blueprints.errors import EnvelopeApi
from serving.service import InferenceService


def make_api(app: Flask) -> EnvelopeApi:
    """The OpenAPI/flask-smorest object of one app.

    Created per app rather than once at module level: flask-smorest keeps the spec on the Api
    object, so a shared one would serve the spec of whichever app was built last.
    """
    return EnvelopeApi(app)


def inference_service() -> InferenceService:
    """The serving core of the current app."""
    service: InferenceService = current_app.extensions["modelgate.service"]
    return service

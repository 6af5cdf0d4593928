"""Flask extensions, created unbound here and bound to an app in ``create_app``."""

from __future__ import annotations

from flask import current_app
from flask_smorest import Api

from blueprints.errors import EnvelopeApi
from serving.service import InferenceService

api: Api = EnvelopeApi()


def inference_service() -> InferenceService:
    """The serving core of the current app."""
    service: InferenceService = current_app.extensions["modelgate.service"]
    return service

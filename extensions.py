"""Extension objects, created unbound here and bound to an app in ``create_app``."""

from __future__ import annotations

from flask import Flask, current_app
from flask_jwt_extended import JWTManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from blueprints.errors import EnvelopeApi
from serving.service import InferenceService


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
jwt = JWTManager()


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

"""Application factory. gunicorn runs ``app:create_app()``; each worker builds its own core."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request

from blueprints import models, pages, v2
from blueprints.errors import register_error_handlers
from config import Config
from extensions import make_api
from logs import configure_logging
from serving.runtimes import RuntimeFactory
from serving.service import InferenceService
from serving.settings import ServingSettings

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _settings(config: Mapping[str, Any]) -> ServingSettings:
    model_root = Path(config["MODEL_ROOT"])
    if not model_root.is_dir():
        raise RuntimeError(f"MODEL_ROOT {model_root} is not a directory; set MODELGATE_MODEL_ROOT")
    return ServingSettings(
        model_root=model_root,
        load_in_background=bool(config["LOAD_MODELS_IN_BACKGROUND"]),
        tflite_threads=int(config["TFLITE_THREADS"]),
        tf_intra_op_threads=int(config["TF_INTRA_OP_THREADS"]),
        max_image_pixels=int(config["MAX_IMAGE_PIXELS"]),
        max_items_per_request=int(config["MAX_ITEMS_PER_REQUEST"]),
    )


def _assign_request_id() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex


def _tag_response(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    runtime_factories: Mapping[str, RuntimeFactory] | None = None,
) -> Flask:
    """Build the app: configure, bind extensions, start the serving core, add the routes."""
    app = Flask(__name__)
    app.config.from_object(Config)
    app.config.from_prefixed_env("MODELGATE")
    if config:
        app.config.update(config)
    # apispec writes into the options it is given; a per-app copy keeps apps independent.
    app.config["API_SPEC_OPTIONS"] = copy.deepcopy(app.config["API_SPEC_OPTIONS"])
    configure_logging(app.config["LOG_LEVEL"])

    api = make_api(app)
    service = InferenceService(_settings(app.config), runtime_factories)
    app.extensions["modelgate.service"] = service
    service.start()

    app.before_request(_assign_request_id)
    app.after_request(_tag_response)
    api.register_blueprint(models.blp)
    api.register_blueprint(v2.blp)
    app.register_blueprint(pages.bp)
    register_error_handlers(app)
    return app

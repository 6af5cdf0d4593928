"""Application factory. gunicorn runs ``app:create_app()``; each worker builds its own core."""

from __future__ import annotations

import copy
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from accounts.auth import init_auth
from accounts.cli import users_cli
from accounts.limits import init_limits
from accounts.ratelimit import sqlite_pragmas
from accounts.usage import init_usage
from blueprints import admin, auth, deploy, jobs, models, pages, v2
from blueprints.errors import register_error_handlers
from blueprints.io import check_json_body
from blueprints.security import init_security_headers
from blueprints.traffic import init_interactive_tracking
from config import Config, TestingConfig
from deployments.cli import deploy_cli
from deployments.sync import init_deployments
from extensions import db, jwt, make_api, migrate
from jobs.runner import init_jobs
from logs import configure_logging
from modelops.cli import models_cli
from serving.runtimes import RuntimeFactory
from serving.service import InferenceService
from serving.settings import ServingSettings

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class ConfigurationError(RuntimeError):
    """The server refuses to start, and says why."""


def _configure(app: Flask, config: Mapping[str, Any] | None) -> None:
    testing = bool(config and config.get("TESTING"))
    app.config.from_object(TestingConfig if testing else Config)
    app.config.from_prefixed_env("MODELGATE")
    if "DATABASE_URL" in os.environ and "MODELGATE_SQLALCHEMY_DATABASE_URI" not in os.environ:
        app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    if config:
        app.config.update(config)
    # apispec writes into the options it is given; a per-app copy keeps apps independent.
    app.config["API_SPEC_OPTIONS"] = copy.deepcopy(app.config["API_SPEC_OPTIONS"])
    app.config["API_SPEC_OPTIONS"].setdefault("components", {})["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    app.config["API_SPEC_OPTIONS"]["security"] = [{"bearerAuth": []}, {"apiKey": []}]
    if app.config["RATELIMIT_STORAGE_URI"] is None:
        app.config["RATELIMIT_STORAGE_URI"] = _sql_storage_uri(
            app.config["SQLALCHEMY_DATABASE_URI"]
        )
    secret = app.config.get("JWT_SECRET_KEY") or ""
    if len(secret.encode()) < app.config["MIN_SECRET_BYTES"] and not app.testing:
        raise ConfigurationError(
            "MODELGATE_JWT_SECRET_KEY is missing or shorter than "
            f"{app.config['MIN_SECRET_BYTES']} bytes; `make run` generates one into instance/"
        )
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # One process's file: no connections to drop, so no ping before every checkout.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            **app.config["SQLALCHEMY_ENGINE_OPTIONS"],
            "pool_pre_ping": False,
        }
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )


def _sql_storage_uri(database_uri: str) -> str:
    if database_uri == "sqlite://":
        # An in-memory database is private to one connection; tests count in memory instead.
        return "memory://"
    return "sql+" + database_uri.replace("postgresql://", "postgresql+psycopg://", 1)


def _settings(config: Mapping[str, Any]) -> ServingSettings:
    model_root = Path(config["MODEL_ROOT"])
    if not model_root.is_dir():
        raise ConfigurationError(
            f"MODEL_ROOT {model_root} is not a directory; set MODELGATE_MODEL_ROOT"
        )
    return ServingSettings(
        model_root=model_root,
        pipeline_root=Path(config["PIPELINE_ROOT"]) if config.get("PIPELINE_ROOT") else None,
        load_in_background=bool(config["LOAD_MODELS_IN_BACKGROUND"]),
        tflite_threads=int(config["TFLITE_THREADS"]),
        tf_intra_op_threads=int(config["TF_INTRA_OP_THREADS"]),
        max_image_pixels=int(config["MAX_IMAGE_PIXELS"]),
        max_items_per_request=int(config["MAX_ITEMS_PER_REQUEST"]),
    )


def _should_serve(app: Flask) -> bool:
    """Load models unless a `flask` CLI command other than `run` is building the app."""
    if app.config["START_SERVING"] is not None:
        return bool(app.config["START_SERVING"])
    context = click.get_current_context(silent=True)
    return context is None or context.info_name == "run"


_SECURITY_ERRORS = {
    "401": "Missing, invalid, expired or revoked credentials",
    "403": "The role or scopes do not allow this",
    "429": "A rate limit or quota is used up (see Retry-After)",
}


def _document_security_errors(api: Any) -> None:
    """Every protected operation may answer 401, 403 and 429; say so once, here."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for operations in api.spec._paths.values():
        for operation in operations.values():
            if not isinstance(operation, dict) or operation.get("security") == []:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in _SECURITY_ERRORS.items():
                responses.setdefault(status, {"description": description, **error})


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
    app = Flask(__name__, instance_relative_config=True)
    _configure(app, config)
    configure_logging(app.config["LOG_LEVEL"])
    if app.config["TRUSTED_PROXY_COUNT"]:
        count = int(app.config["TRUSTED_PROXY_COUNT"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)  # type: ignore[method-assign]

    db.init_app(app)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        with app.app_context():
            sa.event.listen(db.engine, "connect", sqlite_pragmas)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    jwt.init_app(app)
    api = make_api(app)

    service = InferenceService(_settings(app.config), runtime_factories)
    app.extensions["modelgate.service"] = service
    serving = _should_serve(app)
    if serving:
        service.start()
        if float(app.config["MODEL_WATCH_INTERVAL_SECONDS"]) > 0:
            service.watch(float(app.config["MODEL_WATCH_INTERVAL_SECONDS"]))
    init_deployments(app, service, serving=serving)
    init_jobs(app, service, serving=serving)

    # Order matters: request ids first, then rate limits (per-IP counted before credentials
    # are checked), then authentication and permissions, then the body checks (nobody gets a
    # body read before they are known).
    app.before_request(_assign_request_id)
    init_interactive_tracking(app)
    init_limits(app)
    init_auth(app)
    init_usage(app)
    init_security_headers(app)
    app.before_request(check_json_body)
    app.after_request(_tag_response)

    api.register_blueprint(auth.blp)
    api.register_blueprint(models.blp)
    api.register_blueprint(v2.blp)
    api.register_blueprint(admin.blp)
    api.register_blueprint(deploy.blp)
    api.register_blueprint(jobs.blp)
    app.register_blueprint(pages.bp)
    _document_security_errors(api)
    app.cli.add_command(users_cli)
    app.cli.add_command(deploy_cli)
    app.cli.add_command(models_cli)
    register_error_handlers(app)
    return app

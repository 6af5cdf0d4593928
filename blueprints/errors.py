"""One JSON error envelope for everything the server answers with an error.

``{"error": "<message>", "code": "<short_code>", "status": <int>, "details": {...},
"request_id": "..."}``. ``error`` is a string because the Open Inference Protocol v2 and TF
Serving clients read exactly that field; the other keys add what a program needs to react.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import marshmallow as ma
from flask import Flask, Response, g, jsonify
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from serving.errors import ServingError

log = logging.getLogger("modelgate.http")


class ErrorSchema(ma.Schema):
    error = ma.fields.String(required=True, metadata={"description": "What went wrong"})
    code = ma.fields.String(required=True, metadata={"description": "Stable short code"})
    status = ma.fields.Integer(required=True, metadata={"description": "HTTP status"})
    details = ma.fields.Dict(metadata={"description": "Machine-readable context"})
    request_id = ma.fields.String(metadata={"description": "Echoed in X-Request-ID"})


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"error": message, "code": code, "status": status}
    if details:
        body["details"] = details
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    details: dict[str, Any] = {}
    # webargs puts validation messages in data["messages"], keyed by location.
    if "messages" in data:
        details["errors"] = data["messages"]
    if "errors" in data:
        details["errors"] = data["errors"]
    message = data.get("message") or error.description or HTTPStatus(status).phrase
    code = "invalid_input" if status == 422 else _snake(HTTPStatus(status).phrase)
    if status >= 500:
        message = "internal server error"
    return error_response(status, code, message, details, headers=data.get("headers"))


class EnvelopeApi(Api):
    """flask-smorest's Api, answering its errors (webargs 422, abort) in our envelope."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> Response:  # type: ignore[override]
        if error.code and error.code >= 500:
            original = getattr(error, "original_exception", None)
            if original is not None:
                log.error("unhandled error", exc_info=original)
        return _http_error(error)


def _serving_error(error: ServingError) -> Response:
    status = int(error.status)
    if status >= 500:
        log.error("%s: %s", error.code, error.message, extra={"details": error.details})
    headers = {"Retry-After": "1"} if status == 503 else None
    return error_response(status, error.code, error.message, error.details, headers)


def _unexpected(error: Exception) -> Response:
    log.exception("unhandled error", exc_info=error)
    return error_response(500, "internal_error", "internal server error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ServingError, _serving_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)

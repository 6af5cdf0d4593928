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

from serving.errors import InvalidInput, PayloadTooLarge, ServingError, UnsupportedMediaType

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


_SHARED_CODES = {
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: PayloadTooLarge.code,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: UnsupportedMediaType.code,
    HTTPStatus.UNPROCESSABLE_ENTITY: InvalidInput.code,
}


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    details: dict[str, Any] = {}
    # webargs puts validation messages in data["messages"], keyed by location.
    if "messages" in data:
        details["errors"] = data["messages"]
        data = {**data, "message": data.get("message") or "the request does not validate"}
    if "errors" in data:
        details["errors"] = data["errors"]
    message = data.get("message") or error.description or HTTPStatus(status).phrase
    # The same condition keeps the same code whoever raised it (werkzeug's 413 and the JSON
    # reader's); a phrase-derived code would also change with Python (3.13 renamed 413).
    code = _SHARED_CODES.get(status) or _snake(HTTPStatus(status).phrase)
    if status >= 500:
        message = "internal server error"
    # Keep the exception's own headers (Allow on a 405), not its HTML Content-Type.
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    headers.update(data.get("headers") or {})
    return error_response(status, code, message, details, headers=headers)


class EnvelopeApi(Api):
    """flask-smorest's Api, documenting our error envelope instead of its own."""

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self) -> None:
        # create_app registers ours for every exception (register_error_handlers below);
        # flask-smorest's own HTTPException handler would answer in a different shape.
        pass


class ApiError(Exception):
    """An error of the web product itself (auth, administration), not of serving."""

    status: int = 500
    code: str = "internal_error"
    headers: dict[str, str] = {}  # noqa: RUF012 - read-only per class

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="modelgate"'}  # noqa: RUF012


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


def _api_error(error: ApiError) -> Response:
    return error_response(error.status, error.code, error.message, error.details, error.headers)


def _serving_error(error: ServingError) -> Response:
    status = int(error.status)
    if status >= 500:
        log.error("%s: %s", error.code, error.message, extra={"details": error.details})
    headers = {"Retry-After": "1"} if status == 503 else None
    return error_response(status, error.code, error.message, error.details, headers)


def _unexpected(error: Exception) -> Response:
    log.error("unhandled error", exc_info=error)
    return error_response(500, "internal_error", "internal server error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ServingError, _serving_error)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)

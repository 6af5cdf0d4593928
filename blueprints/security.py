"""Security headers on every response."""

from __future__ import annotations

from flask import Flask, Response, request

from serving.errors import UnsupportedMediaType

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; "
    "form-action 'self'"
)
# Swagger UI's page runs one inline script (flask-smorest's template); only that page may.
_SWAGGER_CSP = _CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")


def _headers(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if response.mimetype == "text/html":
        swagger = request.endpoint == "api-docs.openapi_swagger_ui"
        response.headers["Content-Security-Policy"] = _SWAGGER_CSP if swagger else _CSP
    if request.endpoint != "static":
        # Predictions and account data must not sit in shared caches.
        response.headers["Cache-Control"] = "no-store"
    return response


def _refuse_encoded_bodies() -> None:
    # Size limits count the bytes the application reads; a compressed body would expand past
    # them after the check, so such bodies are refused rather than decoded.
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding '{encoding}' is not accepted; send the body uncompressed"
        )


def init_security_headers(app: Flask) -> None:
    app.before_request(_refuse_encoded_bodies)
    app.after_request(_headers)

"""Reading request bodies: size-checked JSON that refuses NaN, uploads, raw image bodies."""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, request

from serving.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from serving.pipeline import Item


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not a number JSON allows")


def read_json(*, require_content_type: bool = True) -> Any:
    """The request body as JSON, at most ``MAX_JSON_BYTES``.

    v2 clients send infer requests without a Content-Type, so routes of that protocol call
    this with ``require_content_type=False``.
    """
    if require_content_type and not request.is_json:
        raise UnsupportedMediaType("send application/json")
    limit = current_app.config["MAX_JSON_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"JSON bodies are limited to {limit} bytes")
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise PayloadTooLarge(f"JSON bodies are limited to {limit} bytes")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError as err:
        raise InvalidInput("the JSON body is nested too deeply") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInput(f"the body is not valid JSON: {err}") from err


def predict_items() -> list[Item]:
    """Items of an own-API predict call, whatever the encoding the client chose."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        files = [f for key in request.files for f in request.files.getlist(key)]
        if not files:
            raise InvalidInput("the multipart body holds no file")
        items: list[Item] = []
        for upload in files:
            data = upload.read()
            if not data:
                raise InvalidInput(f"the uploaded file '{upload.filename}' is empty")
            items.append(data)
        return items
    if mimetype.startswith("image/"):
        data = request.get_data(cache=False)
        if not data:
            raise InvalidInput("the request body is empty")
        return [data]
    if request.is_json:
        body = read_json()
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list):
            raise InvalidInput('the JSON body must be {"instances": [...]}')
        return instances
    raise UnsupportedMediaType(
        "send multipart/form-data with image files, an image/* body, or application/json",
        details={"got": mimetype or None},
    )

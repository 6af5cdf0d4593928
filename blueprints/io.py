"""Reading request bodies: size-checked JSON that refuses NaN, uploads, raw image bodies."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flask import current_app, g, request

from serving.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from serving.pipeline import Item


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not a number JSON allows")


def _json_depth(raw: bytes) -> int:
    """How deeply a JSON document nests, found without parsing it (so without recursion).

    Brackets inside strings do not count: a quote opens or closes a string unless an odd
    number of backslashes precede it. Vectorised and linear, because bodies reach a megabyte;
    blanking strings with a regex first took quadratic time on one unterminated string full
    of escaped quotes (a 32 KiB body held a worker for seconds).
    """
    codes = np.frombuffer(raw, dtype=np.uint8)
    if codes.size == 0:
        return 0
    index = np.arange(codes.size, dtype=np.int32)
    backslash = codes == ord("\\")
    # Length of the run of backslashes ending at each position (0 elsewhere).
    run = index - np.maximum.accumulate(np.where(backslash, np.int32(-1), index))
    escaped = np.zeros(codes.shape, dtype=bool)
    escaped[1:] = run[:-1] % 2 == 1
    quotes = (codes == ord('"')) & ~escaped
    outside = np.cumsum(quotes, dtype=np.int32) % 2 == 0
    steps = np.zeros(codes.shape, dtype=np.int8)
    steps[((codes == ord("[")) | (codes == ord("{"))) & outside] = 1
    steps[((codes == ord("]")) | (codes == ord("}"))) & outside] = -1
    return int(np.cumsum(steps, dtype=np.int32).max())


def _read_body() -> bytes:
    """The whole body, at most ``MAX_CONTENT_LENGTH`` bytes; raises PayloadTooLarge.

    A body without Content-Length (chunked) is cut off by werkzeug at the limit and what was
    read is returned as if it were all: without this check an oversized upload would reach
    the model truncated (a 422 for a "corrupt" image) instead of being refused with a 413.
    """
    data = request.get_data(cache=True)
    limit = request.max_content_length
    cut_off = request.content_length is None and limit is not None and len(data) >= limit
    if cut_off and request.environ["wsgi.input"].read(1):
        raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")
    return data


def read_json(*, require_content_type: bool = True) -> Any:
    """The request body as JSON, at most ``MAX_JSON_BYTES``, nesting at most ``MAX_JSON_DEPTH``,
    without NaN or Infinity; raises PayloadTooLarge, InvalidInput or UnsupportedMediaType.

    v2 clients send infer requests without a Content-Type, so routes of that protocol call
    this with ``require_content_type=False``. Parsed once per request: ``check_json_body``
    and the login rate limit call it before the view does.
    """
    if require_content_type and not request.is_json:
        raise UnsupportedMediaType("send application/json")
    if "json_body" not in g:
        g.json_body = _parse_json()
    return g.json_body


def _parse_json() -> Any:
    limit = current_app.config["MAX_JSON_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"JSON bodies are limited to {limit} bytes")
    # Kept (cached) so that webargs, which parses the bodies of the auth and admin views,
    # reads the same bytes after they passed the checks below.
    return parse_json_bytes(_read_body())


def read_v2_body() -> tuple[Any, bytes]:
    """A v2 infer body: JSON, or with the binary tensor data extension a JSON header of
    ``Inference-Header-Content-Length`` bytes followed by raw tensor bytes. The JSON part is
    held to the JSON limits, the whole body to MAX_CONTENT_LENGTH."""
    declared = request.headers.get("Inference-Header-Content-Length")
    if declared is None:
        return read_json(require_content_type=False), b""
    if not declared.isdigit():
        raise InvalidInput("Inference-Header-Content-Length must be a byte count")
    raw = _read_body()
    length = int(declared)
    if length > len(raw):
        raise InvalidInput("Inference-Header-Content-Length is larger than the body")
    return parse_json_bytes(raw[:length]), raw[length:]


def parse_json_bytes(raw: bytes) -> Any:
    """JSON from bytes under the size, depth and NaN rules of ``read_json``."""
    limit = current_app.config["MAX_JSON_BYTES"]
    if len(raw) > limit:
        raise PayloadTooLarge(f"JSON bodies are limited to {limit} bytes")
    max_depth = current_app.config["MAX_JSON_DEPTH"]
    if _json_depth(raw) > max_depth:
        raise InvalidInput(f"the JSON body nests deeper than {max_depth} levels")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError as err:
        raise InvalidInput("the JSON body is nested too deeply") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInput(f"the body is not valid JSON: {err}") from err


def check_json_body() -> None:
    """Before every view: a JSON body meets the limits of ``read_json`` whichever route gets
    it. The auth and admin views parse theirs through webargs, which checks neither size nor
    depth (a deeply nested body made it raise RecursionError) and accepts NaN. An empty body
    is left to the view (webargs reads it as no body)."""
    if not request.is_json or request.content_length == 0:
        return
    if request.content_length is None and not request.get_data(cache=True):
        return
    read_json()


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
        data = _read_body()
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

"""Hostile bodies get the right 4xx at once, without the server holding them in memory."""

from __future__ import annotations

import gzip
import io
import json
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from serving.manifest import VersionSpec
from serving.runtimes.fake import FakeRuntime
from serving.settings import ServingSettings
from tests.conftest import assert_error, client_as, png_bytes
from tests.security.conftest import png_header

MakeApp = Callable[..., Flask]
MiB = 1024 * 1024
PREDICT = "/api/models/tab/predict"
INFER = "/v2/models/tab/infer"


@contextmanager
def bounded(seconds: float = 1.0, megabytes: float = 8.0) -> Iterator[None]:
    """The block must finish within ``seconds`` and allocate at most ``megabytes`` at its peak."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < megabytes * MiB, f"allocated {peak / MiB:.1f} MiB at the peak"


def json_body(size: int) -> bytes:
    return json.dumps({"instances": [[1, 2, 3]], "padding": "x" * size}).encode()


def chunked(client: FlaskClient, path: str, data: bytes, content_type: str) -> object:
    """Send ``data`` as gunicorn hands over a chunked body: no Content-Length."""
    return client.post(
        path,
        input_stream=io.BytesIO(data),
        content_type=content_type,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("path", [PREDICT, INFER, "/auth/token", "/api/keys", "/auth/logout"])
def test_json_over_the_limit_is_413_on_every_route(client: FlaskClient, path: str) -> None:
    body = json_body(MiB)

    with bounded():
        response = client.post(path, data=body, content_type="application/json")

    assert_error(response, 413, "payload_too_large")


def test_json_limit_is_configurable(make_app: MakeApp) -> None:
    client = client_as(make_app(MAX_JSON_BYTES=1000), "admin")

    assert (
        client.post(PREDICT, data=json_body(500), content_type="application/json").status_code
        == 200
    )
    response = client.post(PREDICT, data=json_body(1000), content_type="application/json")
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("path", [PREDICT, "/auth/token"])
def test_chunked_json_counts_the_bytes_actually_sent(make_app: MakeApp, path: str) -> None:
    client = client_as(make_app(MAX_JSON_BYTES=1000), "admin")

    response = chunked(client, path, json_body(5000), "application/json")

    assert_error(response, 413, "payload_too_large")  # type: ignore[arg-type]


def test_chunked_upload_beyond_the_limit_is_413_not_a_truncated_image(make_app: MakeApp) -> None:
    client = client_as(make_app(MAX_CONTENT_LENGTH=MiB), "admin")
    image = png_bytes(Image.new("L", (40, 40), 128))
    oversized = image + bytes(20 * MiB)

    with bounded(megabytes=4):
        refused = chunked(client, "/api/models/img/predict", oversized, "image/png")
    accepted = chunked(client, "/api/models/img/predict", image, "image/png")

    assert_error(refused, 413, "payload_too_large")  # type: ignore[arg-type]
    assert accepted.status_code == 200  # type: ignore[attr-defined]


def test_upload_over_the_limit_is_413(make_app: MakeApp) -> None:
    client = client_as(make_app(MAX_CONTENT_LENGTH=100_000), "admin")
    image = png_bytes(Image.new("L", (8, 8))) + bytes(200_000)

    with bounded():
        multipart = client.post(
            "/api/models/img/predict", data={"file": (io.BytesIO(image), "big.png")}
        )
        raw = client.post("/api/models/img/predict", data=image, content_type="image/png")

    assert_error(multipart, 413, "payload_too_large")
    assert_error(raw, 413, "payload_too_large")


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP", "gzip, identity"])
def test_compressed_bodies_are_refused_not_decoded(client: FlaskClient, encoding: str) -> None:
    bomb = gzip.compress(b"[" + b" " * (50 * MiB) + b"]")

    with bounded():
        response = client.post(
            PREDICT,
            data=bomb,
            content_type="application/json",
            headers={"Content-Encoding": encoding},
        )

    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("path", [PREDICT, INFER, "/auth/token", "/api/users", "/auth/logout"])
def test_deep_nesting_is_refused_quickly(client: FlaskClient, path: str) -> None:
    with bounded():
        response = client.post(path, data="[" * 100_000, content_type="application/json")

    assert_error(response, 422, "invalid_input")


def test_depth_scan_stays_linear_on_an_unterminated_string_of_escaped_quotes(
    client: FlaskClient,
) -> None:
    # 80 kB: a quadratic scan (a regex blanking strings first) takes some 13 s on this.
    body = b'{"instances": "' + b'\\"' * 40_000

    with bounded(seconds=1.0, megabytes=8):
        response = client.post(PREDICT, data=body, content_type="application/json")

    assert_error(response, 422, "invalid_input")


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("before", ["plain", "a\\", 'a\\"[[[[', "{{{{"])
def test_nesting_is_counted_outside_strings_up_to_the_limit(
    client: FlaskClient, before: str
) -> None:
    def body(depth: int) -> str:
        # The object itself is one level: "deep" holds depth - 1 more.
        return json.dumps({"note": before, "instances": [[1, 2, 3]], "deep": nested(depth - 1)})

    accepted = client.post(PREDICT, data=body(64), content_type="application/json")
    refused = client.post(PREDICT, data=body(65), content_type="application/json")

    assert accepted.status_code == 200, accepted.get_data(as_text=True)
    assert_error(refused, 422, "invalid_input")


def test_brackets_inside_strings_do_not_count_as_nesting(client: FlaskClient) -> None:
    body = {"instances": [{"a": 1, "b": 2, "c": 3}], "note": '[[[[\\"' * 100 + '"'}
    response = client.post(PREDICT, data=json.dumps(body), content_type="application/json")

    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("path", [PREDICT, INFER, "/api/keys"])
def test_nan_and_infinity_are_refused_on_input(
    client: FlaskClient, path: str, constant: str
) -> None:
    bodies = {
        PREDICT: f'{{"instances": [[{constant}, 1, 2]]}}',
        INFER: (
            '{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 3], '
            f'"data": [{constant}, 1, 2]}}]}}'
        ),
        "/api/keys": f'{{"name": "k", "daily_quota": {constant}}}',
    }

    response = client.post(path, data=bodies[path], content_type="application/json")

    assert_error(response, 422, "invalid_input")


def _nan_factory(spec: VersionSpec, _settings: ServingSettings) -> FakeRuntime:
    def nan(spec: VersionSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = spec.outputs[0]
        rows = next(iter(inputs.values())).shape[0]
        return {out.name: np.full((rows, *out.item_shape), np.nan, dtype=out.dtype)}

    return FakeRuntime(spec, nan)


def test_nan_produced_by_a_model_is_never_emitted(make_app: MakeApp) -> None:
    client = client_as(make_app(factories={"fake": _nan_factory}), "admin")
    v2_body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}

    for response in (
        client.post(PREDICT, json={"instances": [[1, 2, 3]]}),
        client.post(INFER, json=v2_body),
    ):
        text = response.get_data(as_text=True)
        json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} emitted"))
        assert response.status_code >= 400


@pytest.mark.parametrize("side", [30_000, 6_000])  # beyond Pillow's own bomb limit; ours only
def test_pixel_bomb_is_refused_from_its_header(client: FlaskClient, side: int) -> None:
    bomb = png_header(side, side)

    with bounded(megabytes=4):
        response = client.post("/api/models/img/predict", data=bomb, content_type="image/png")

    assert "pixels" in assert_error(response, 422, "invalid_input")["error"]


def test_truncated_and_foreign_images_are_refused(client: FlaskClient) -> None:
    whole = png_bytes(Image.new("L", (40, 40), 128))
    gif = io.BytesIO()
    Image.new("L", (4, 4)).save(gif, format="GIF")

    truncated = client.post("/api/models/img/predict", data=whole[:-30], content_type="image/png")
    foreign = client.post("/api/models/img/predict", data=gif.getvalue(), content_type="image/png")

    assert_error(truncated, 422, "invalid_input")
    assert_error(foreign, 415, "unsupported_media_type")


@pytest.mark.parametrize(("config", "parts"), [({}, 65), ({"MAX_FORM_PARTS": 8}, 9)])
def test_too_many_multipart_parts_is_413(
    make_app: MakeApp, config: dict[str, int], parts: int
) -> None:
    client = client_as(make_app(**config), "admin")
    # Text fields: werkzeug leaves the temporary files of file parts parsed before the limit
    # to the garbage collector (a ResourceWarning), which is its business, not the server's.
    fields = {f"field{i}": "x" for i in range(parts)}

    response = client.post(
        "/api/models/img/predict", data=fields, content_type="multipart/form-data"
    )

    assert_error(response, 413, "payload_too_large")


def test_oversized_multipart_text_field_is_413(make_app: MakeApp) -> None:
    client = client_as(make_app(MAX_FORM_MEMORY_SIZE=100 * 1024), "admin")
    image = png_bytes(Image.new("L", (4, 4)))
    fields = {"file": (io.BytesIO(image), "a.png"), "note": "x" * (128 * 1024)}

    response = client.post("/api/models/img/predict", data=fields)

    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("newlines", [False, True])
def test_a_multipart_image_of_several_mebibytes_is_accepted(
    client: FlaskClient, newlines: bool
) -> None:
    """Regression: werkzeug's per-part buffer limit refused every upload above ~64 KiB."""
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    if not newlines:
        noise[noise == 10] = 11  # no line break in the file: one long run of bytes
    image = png_bytes(Image.fromarray(noise))
    assert len(image) > 4 * MiB

    # Encoded here: the test client spools a large multipart body to a file it never closes.
    boundary, body = encode_multipart({"file": FileStorage(io.BytesIO(image), "a.png")})
    response = client.post(
        "/api/models/img/predict",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )

    assert response.status_code == 200, response.get_json()

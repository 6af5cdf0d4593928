"""Inputs for the benchmark: random tensors of a signature, and realistic request bodies.

Only numpy, Pillow and (for the digit pictures) scikit-learn: no TensorFlow.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from serving.manifest import TensorSpec, VersionSpec

IMAGE_SIZE = 64
IRIS_INSTANCE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
IRIS_INSTANCE_LABEL = "setosa"


@dataclass(frozen=True)
class Sample:
    """One request body for the own predict route, and the label a correct model gives it."""

    body: bytes
    content_type: str
    expected: str | None


def random_array(tensor: TensorSpec, items: int, rng: np.random.Generator) -> np.ndarray:
    """``items`` random items of the tensor's item shape and dtype: floats in [0, 1), which is
    the range the bundled models' pre-processing produces, or small integers."""
    shape = (items, *(d if d > 0 else 1 for d in tensor.item_shape))
    dtype = tensor.dtype
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float64).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 16, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    raise ValueError(f"no random inputs for datatype {tensor.datatype}")


def random_inputs(spec: VersionSpec, items: int, rng: np.random.Generator) -> dict[str, Any]:
    """A batch for ``runtime.predict``: every declared input, ``items`` random items each."""
    return {t.name: random_array(t, items, rng) for t in spec.inputs}


def infer_body(spec: VersionSpec, rng: np.random.Generator) -> bytes:
    """A v2 infer request body holding one random item of every input."""
    inputs = [
        {
            "name": t.name,
            "shape": [1, *t.item_shape],
            "datatype": t.datatype,
            "data": random_array(t, 1, rng).reshape(-1).tolist(),
        }
        for t in spec.inputs
    ]
    return json.dumps({"inputs": inputs}).encode()


def infer_body_binary(spec: VersionSpec, rng: np.random.Generator) -> tuple[bytes, dict[str, str]]:
    """A v2 infer request with the binary tensor data extension, one random item of every input:
    the body (a JSON header, then each input's raw little-endian bytes in order) and the
    ``Inference-Header-Content-Length`` header it needs. The outputs come back as JSON."""
    described, data = [], []
    for t in spec.inputs:
        array = random_array(t, 1, rng)
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        described.append(
            {
                "name": t.name,
                "shape": list(array.shape),
                "datatype": t.datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        data.append(raw)
    header = json.dumps({"inputs": described}).encode()
    return header + b"".join(data), {"Inference-Header-Content-Length": str(len(header))}


def predict_kind(spec: VersionSpec) -> str | None:
    """``image`` or ``tabular`` by the first pre-processing step; None when the own predict
    route cannot answer (no post-processing) or takes something this benchmark cannot make."""
    if spec.postprocess is None or not spec.preprocess:
        return None
    return {"decode_image": "image", "features": "tabular"}.get(spec.preprocess[0].step)


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(filename: str, png: bytes) -> tuple[bytes, str]:
    boundary = f"bench-{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    body = head + png + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _digit_images(count: int) -> list[tuple[Any, str | None]]:
    """scikit-learn's 8x8 digits as dark ink on white, upscaled to 64x64 like a drawing."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images: list[tuple[Any, str | None]] = []
    for i in range(count):
        grey = (255 - digits.images[i] * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(grey, "L").resize(
            (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR
        )
        images.append((image, str(int(digits.target[i]))))
    return images


def _shape_images(count: int) -> list[tuple[Any, str | None]]:
    """Shapes drawn by the training generator when it is importable, else synthetic ones."""
    try:
        from training import shapes_data
    except ImportError:
        return _synthetic_images(count)
    rng = np.random.default_rng(7)
    classes = shapes_data.CLASSES
    return [
        (shapes_data.render(i % len(classes), rng, IMAGE_SIZE), classes[i % len(classes)])
        for i in range(count)
    ]


def _synthetic_images(count: int) -> list[tuple[Any, str | None]]:
    """A filled circle of a random colour on a random background; no expected label."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(11)
    images: list[tuple[Any, str | None]] = []
    for _ in range(count):
        background, ink = (tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2))
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
        radius = int(rng.integers(10, 28))
        cx, cy = (int(c) for c in rng.integers(radius, IMAGE_SIZE - radius, 2))
        ImageDraw.Draw(image).ellipse([cx - radius, cy - radius, cx + radius, cy + radius], ink)
        images.append((image, None))
    return images


def predict_samples(spec: VersionSpec) -> list[Sample]:
    """Bodies for ``POST /api/models/<name>/versions/<v>/predict``, one item each.

    Image models get PNG uploads (digits: scikit-learn digits; shapes: the training
    generator's shapes; anything else: synthetic pictures), tabular models one JSON instance.
    """
    labels = set(spec.labels)
    kind = predict_kind(spec)
    if kind == "tabular":
        names = [str(n) for n in spec.preprocess[0].params.get("names", ())]
        if set(names) == set(IRIS_INSTANCE):
            instance, expected = dict(IRIS_INSTANCE), IRIS_INSTANCE_LABEL
        else:
            instance, expected = dict.fromkeys(names, 0.5), None
        body = json.dumps({"instances": [instance]}).encode()
        return [Sample(body, "application/json", expected if expected in labels else None)]
    if kind != "image":
        return []
    if "digit" in spec.model:
        images = _digit_images(10)
    elif "shape" in spec.model:
        images = _shape_images(12)
    else:
        images = _synthetic_images(8)
    samples = []
    for i, (image, expected) in enumerate(images):
        body, content_type = _multipart(f"sample{i}.png", _png(image))
        samples.append(Sample(body, content_type, expected if expected in labels else None))
    return samples

"""Synthetic coloured-shape images for the ``shapes`` model.

Pure numpy + Pillow (no TensorFlow), so tests and the server can import it
cheaply to make sample images.

Every image is ``size`` x ``size`` RGB: one filled shape of a random colour,
size, rotation and position on a random solid background, plus Gaussian pixel
noise.  The shape colour is chosen to differ clearly from the background
(both in RGB distance and in luminance) so the shape is always visible.
Shapes are drawn at ``SUPERSAMPLE`` times the target resolution and reduced
with a box filter, which gives anti-aliased edges similar to real drawings.

All randomness comes from the ``numpy.random.Generator`` that is passed in,
so ``generate(n, seed)`` is fully reproducible.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ["circle", "square", "triangle", "star", "hexagon", "cross"]

SUPERSAMPLE = 2
# Minimum Euclidean RGB distance and minimum luminance difference between the
# shape colour and the background colour.
MIN_RGB_DISTANCE = 120.0
MIN_LUMA_DIFFERENCE = 40.0


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A (background, foreground) pair with enough contrast to be visible."""
    bg = rng.integers(0, 256, size=3)
    while True:
        fg = rng.integers(0, 256, size=3)
        dist = float(np.linalg.norm(fg.astype(np.float64) - bg.astype(np.float64)))
        if dist >= MIN_RGB_DISTANCE and abs(_luma(fg) - _luma(bg)) >= MIN_LUMA_DIFFERENCE:
            return (int(bg[0]), int(bg[1]), int(bg[2])), (int(fg[0]), int(fg[1]), int(fg[2]))


def _regular_polygon(n: int, radius: float, angle: float) -> list[tuple[float, float]]:
    return [
        (
            radius * math.cos(angle + 2 * math.pi * k / n),
            radius * math.sin(angle + 2 * math.pi * k / n),
        )
        for k in range(n)
    ]


def _star(radius: float, inner_ratio: float, angle: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * inner_ratio
        a = angle + math.pi * k / 5
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _cross(radius: float, arm_ratio: float, angle: float) -> list[tuple[float, float]]:
    """A plus sign whose arms reach ``radius`` and are ``2*radius*arm_ratio`` wide."""
    w = radius * arm_ratio
    r = radius
    outline = [
        (w, r),
        (w, w),
        (r, w),
        (r, -w),
        (w, -w),
        (w, -r),
        (-w, -r),
        (-w, -w),
        (-r, -w),
        (-r, w),
        (-w, w),
        (-w, r),
    ]
    c, s = math.cos(angle), math.sin(angle)
    return [(x * c - y * s, x * s + y * c) for x, y in outline]


def _outline(
    cls: int, radius: float, angle: float, rng: np.random.Generator
) -> list[tuple[float, float]] | None:
    name = CLASSES[cls]
    if name == "circle":
        return None
    if name == "square":
        # radius is the half-diagonal; shrink a little so squares are not huge
        return _regular_polygon(4, radius * 0.95, angle)
    if name == "triangle":
        return _regular_polygon(3, radius, angle)
    if name == "star":
        return _star(radius, float(rng.uniform(0.38, 0.5)), angle)
    if name == "hexagon":
        return _regular_polygon(6, radius, angle)
    if name == "cross":
        return _cross(radius, float(rng.uniform(0.22, 0.34)), angle)
    raise ValueError(f"unknown class index {cls}")


def render(cls: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Render one image of class ``CLASSES[cls]`` as a ``size`` x ``size`` RGB image."""
    if not 0 <= cls < len(CLASSES):
        raise ValueError(f"class index must be in [0, {len(CLASSES)}), got {cls}")
    bg, fg = _colours(rng)
    big = size * SUPERSAMPLE

    # Circumscribed radius between ~18% and ~45% of the image side.
    radius = float(rng.uniform(0.18, 0.45)) * big
    margin = radius + 0.02 * big
    cx = float(rng.uniform(margin, big - margin))
    cy = float(rng.uniform(margin, big - margin))
    angle = float(rng.uniform(0.0, 2 * math.pi))

    img = Image.new("RGB", (big, big), bg)
    draw = ImageDraw.Draw(img)
    outline = _outline(cls, radius, angle, rng)
    if outline is None:
        # circles: slightly smaller so their area is comparable to the polygons
        r = radius * 0.85
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    else:
        draw.polygon([(cx + x, cy + y) for x, y in outline], fill=fg)
    img = img.resize((size, size), Image.Resampling.BOX)

    sigma = float(rng.uniform(0.0, 12.0))
    arr = np.asarray(img, dtype=np.float32)
    if sigma > 0:
        arr = arr + rng.normal(0.0, sigma, size=arr.shape).astype(np.float32)
    arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def generate(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, n x size x size x 3) and int64 labels, class-balanced.

    Labels cycle through the classes and are then shuffled, so every class gets
    ``n // len(CLASSES)`` or one more images.  Same ``(n, seed, size)`` gives
    identical output.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % len(CLASSES))
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, cls in enumerate(labels):
        images[i] = np.asarray(render(int(cls), rng, size), dtype=np.uint8)
    return images, labels

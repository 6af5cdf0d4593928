"""Image steps: decode an upload safely, then shape it like the model's training data."""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serving.errors import InvalidInput, UnsupportedMediaType
from serving.steps import StepContext

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
_MODES = ("L", "RGB")
_RESIZE_POLICIES = ("stretch", "fit", "crop")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite a transparent image onto white: a canvas drawing is ink on transparency."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image


@dataclass(frozen=True)
class DecodeImage:
    """Decode PNG, JPEG or WebP bytes into a Pillow image of ``mode`` (``L`` or ``RGB``).

    The pixel count is checked from the header before any pixel is decoded, so a small file
    that claims a huge canvas (a decompression bomb) costs nothing. EXIF orientation is applied.
    With ``draft_size`` (set by the pipeline from a later resize), a JPEG much larger than that
    is decoded at 1/2, 1/4 or 1/8 scale by the codec itself (Pillow's draft mode), never below
    the size asked for, instead of decoding every pixel only to throw most away.
    """

    mode: str
    max_pixels: int
    draft_size: tuple[int, int] | None = None
    consumes: ClassVar[str] = "bytes"
    produces: ClassVar[str] = "image"

    @classmethod
    def from_params(cls, params: Mapping[str, Any], context: StepContext) -> DecodeImage:
        mode = params.get("mode", "RGB")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}")
        return cls(mode=mode, max_pixels=int(params.get("max_pixels", context.max_image_pixels)))

    def __call__(self, value: bytes) -> Image.Image:
        try:
            with warnings.catch_warnings():
                # Pillow warns before its own bomb check; our check below is the stricter one.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened = Image.open(io.BytesIO(value), formats=sorted(SUPPORTED_FORMATS))
        except UnidentifiedImageError as err:
            raise UnsupportedMediaType(
                "the file is not a PNG, JPEG or WebP image",
                details={"supported": sorted(SUPPORTED_FORMATS)},
            ) from err
        except Image.DecompressionBombError as err:
            raise InvalidInput("the image has too many pixels") from err
        width, height = opened.size
        if width * height > self.max_pixels:
            raise InvalidInput(
                f"the image has {width}x{height} pixels; at most {self.max_pixels} are accepted",
                details={"width": width, "height": height, "max_pixels": self.max_pixels},
            )
        try:
            if self.draft_size is not None and opened.format == "JPEG":
                # Orientation is applied after decoding: ask for the larger side both ways.
                side = max(self.draft_size)
                opened.draft(self.mode, (side, side))
            opened.load()
            image: Image.Image = ImageOps.exif_transpose(opened)
        except (OSError, SyntaxError, ValueError) as err:
            raise InvalidInput(f"the {opened.format} file is truncated or corrupt") from err
        image = _flatten_alpha(image)
        return image.convert(self.mode)


@dataclass(frozen=True)
class DigitInk:
    """Make any picture of a digit look like scikit-learn's ``load_digits`` images.

    Those are 32x32 binary bitmaps, the digit scaled to the full height and centred, reduced
    to ``size`` x ``size`` by counting ink pixels in each block (``levels`` + 1 grey levels),
    with bright ink on a dark background. So: find the background (the median of the border),
    take the distance from it as ink (dark-on-light and light-on-dark both work), crop to the
    ink, fit it into the bitmap keeping the aspect ratio, binarise and count. Returns an
    array in [0, 1].
    """

    size: int
    levels: int
    consumes: ClassVar[str] = "image"
    produces: ClassVar[str] = "array"
    _bitmap_per_cell: ClassVar[int] = 4

    @classmethod
    def from_params(cls, params: Mapping[str, Any], context: StepContext) -> DigitInk:
        size = int(params.get("size", 8))
        levels = int(params.get("levels", 16))
        if size < 1 or levels < 1:
            raise ValueError("size and levels must be positive")
        return cls(size=size, levels=levels)

    def __call__(self, value: Image.Image) -> np.ndarray:
        grey = np.asarray(value.convert("L"), dtype=np.float32)
        border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
        ink = np.abs(grey - np.median(border))
        peak = float(ink.max())
        if peak < 32.0:
            # A blank picture: answer with an empty bitmap rather than amplify noise.
            return np.zeros((self.size, self.size), dtype=np.float32)
        mask = ink >= 0.35 * peak
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        crop = (ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] / peak * 255).astype(np.uint8)
        bitmap = self.size * self._bitmap_per_cell
        h, w = crop.shape
        scale = bitmap / max(h, w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        glyph = Image.fromarray(crop).resize((new_w, new_h), Image.Resampling.LANCZOS)
        canvas = Image.new("L", (bitmap, bitmap), 0)
        canvas.paste(glyph, ((bitmap - new_w) // 2, (bitmap - new_h) // 2))
        on = np.asarray(canvas, dtype=np.float32) >= 96
        cells = on.reshape(self.size, self._bitmap_per_cell, self.size, self._bitmap_per_cell)
        counts = cells.sum(axis=(1, 3)) * (self.levels / self._bitmap_per_cell**2)
        result: np.ndarray = (np.round(counts) / self.levels).astype(np.float32)
        return result


def _border_colour(image: Image.Image) -> tuple[int, ...] | int:
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    median = np.median(border, axis=0)
    return int(median) if np.ndim(median) == 0 else tuple(int(c) for c in median)


@dataclass(frozen=True)
class Resize:
    """Resize to ``size`` (width, height) by ``policy``.

    ``stretch`` ignores the aspect ratio; ``fit`` keeps it and pads with the border colour, so
    a shape is never cut; ``crop`` keeps it and cuts the centre, filling the whole input.
    """

    size: tuple[int, int]
    policy: str
    consumes: ClassVar[str] = "image"
    produces: ClassVar[str] = "image"

    @classmethod
    def from_params(cls, params: Mapping[str, Any], context: StepContext) -> Resize:
        width, height = (int(v) for v in params["size"])
        policy = params.get("policy", "stretch")
        if policy not in _RESIZE_POLICIES:
            raise ValueError(f"policy must be one of {_RESIZE_POLICIES}")
        return cls(size=(width, height), policy=policy)

    def __call__(self, value: Image.Image) -> Image.Image:
        method = Image.Resampling.BILINEAR
        if value.size == self.size:
            return value
        if self.policy == "stretch":
            return value.resize(self.size, method, reducing_gap=3.0)
        if self.policy == "crop":
            return ImageOps.fit(value, self.size, method)
        return ImageOps.pad(value, self.size, method, color=_border_colour(value))


@dataclass(frozen=True)
class ToArray:
    """Pixels to numbers: ``x * scale``, then ``(x - mean) / std`` per channel, in ``layout``."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str
    consumes: ClassVar[str] = "image"
    produces: ClassVar[str] = "array"

    @classmethod
    def from_params(cls, params: Mapping[str, Any], context: StepContext) -> ToArray:
        layout = params.get("layout", "HWC")
        if layout not in ("HWC", "CHW"):
            raise ValueError("layout must be HWC or CHW")
        std = tuple(float(v) for v in params.get("std", (1.0,)))
        if any(s == 0 for s in std):
            raise ValueError("std must not contain 0")
        return cls(
            scale=float(params.get("scale", 1.0)),
            mean=tuple(float(v) for v in params.get("mean", (0.0,))),
            std=std,
            layout=layout,
        )

    def __call__(self, value: Image.Image) -> np.ndarray:
        array: np.ndarray = np.asarray(value, dtype=np.float32) * self.scale
        if array.ndim == 2:
            array = array[:, :, None]
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "CHW":
            array = np.transpose(array, (2, 0, 1))
        return array

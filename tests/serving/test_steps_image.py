"""Golden tests for the image steps: exact sizes and pixel values a model would receive."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from serving.errors import InvalidInput, ManifestError, UnsupportedMediaType
from serving.steps import StepContext, build_step
from serving.steps.image import DecodeImage, DigitInk, Resize, ToArray
from tests.conftest import png_bytes

CONTEXT = StepContext(max_image_pixels=4_000_000)


def decode(data: bytes, mode: str = "RGB", max_pixels: int = 1_000_000) -> Image.Image:
    return DecodeImage(mode=mode, max_pixels=max_pixels)(data)


def png_header(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` whose pixel data is one empty IDAT chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"")


def jpeg_with_exif(image: Image.Image, exif: Image.Exif) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


# -- decode_image ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_decode_image_reads_png_jpeg_and_webp(fmt: str) -> None:
    data = png_bytes(Image.new("RGB", (6, 4), (10, 120, 240)), fmt)

    image = decode(data)

    assert (image.size, image.mode) == ((6, 4), "RGB")
    assert np.abs(pixels(image) - [10, 120, 240]).max() <= 8  # JPEG and WebP are lossy


def test_decode_image_converts_to_the_declared_mode() -> None:
    image = decode(png_bytes(Image.new("RGB", (3, 3), (255, 255, 255))), mode="L")

    assert image.mode == "L"
    assert pixels(image).tolist() == [[255] * 3] * 3


def test_decode_image_applies_exif_orientation() -> None:
    # Stored 40x20 with a red left half; orientation 6 means "rotate 90 degrees clockwise".
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    ImageDraw.Draw(stored).rectangle((0, 0, 19, 19), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = jpeg_with_exif(stored, exif)

    image = decode(data)

    assert image.size == (20, 40)
    assert pixels(image)[5, 10].tolist() == pytest.approx([255, 0, 0], abs=8)  # left went up
    assert pixels(image)[35, 10].tolist() == pytest.approx([0, 0, 255], abs=8)


def transparent_rgba() -> Image.Image:
    canvas = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # transparent *black*
    ImageDraw.Draw(canvas).line((5, 0, 5, 9), fill=(0, 0, 0, 255), width=1)
    return canvas


def transparent_palette() -> Image.Image:
    canvas = Image.new("P", (10, 10), 0)
    canvas.putpalette([0, 0, 0, 0, 0, 0])
    ImageDraw.Draw(canvas).line((5, 0, 5, 9), fill=1, width=1)
    canvas.info["transparency"] = 0
    return canvas


@pytest.mark.parametrize("canvas", [transparent_rgba, transparent_palette])
def test_decode_image_composites_transparent_canvas_onto_white(
    canvas: Callable[[], Image.Image],
) -> None:
    image = decode(png_bytes(canvas()), mode="L")

    grey = pixels(image)
    assert grey[:, 5].tolist() == [0] * 10  # the strokes stay dark
    assert (np.delete(grey, 5, axis=1) == 255).all()  # transparency became white, not black


@pytest.mark.parametrize(
    "data",
    [b"hello, this is text", b"GIF89a" + bytes(50), png_bytes(Image.new("RGB", (2, 2)), "BMP")],
    ids=["text", "gif", "bmp"],
)
def test_decode_image_refuses_other_files_as_unsupported_media(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType, match="not a PNG, JPEG or WebP") as caught:
        decode(data)

    assert caught.value.status == 415
    assert caught.value.details == {"supported": ["JPEG", "PNG", "WEBP"]}


def test_decode_image_refuses_truncated_png_as_invalid_input() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (50, 50, 3), dtype=np.uint8)
    data = png_bytes(Image.fromarray(noise))

    with pytest.raises(InvalidInput, match="the PNG file is truncated or corrupt"):
        decode(data[: len(data) // 2])


def test_decode_image_refuses_too_many_pixels_before_decoding() -> None:
    # The header claims 6000x6000 and no pixel data follows: only a header check can answer.
    with pytest.raises(InvalidInput, match="6000x6000 pixels; at most 1000000") as caught:
        decode(png_header(6000, 6000))

    assert caught.value.details == {"width": 6000, "height": 6000, "max_pixels": 1_000_000}


def test_decode_image_refuses_a_decompression_bomb_header() -> None:
    with pytest.raises(InvalidInput, match="too many pixels"):
        decode(png_header(20_000, 20_000), max_pixels=10**9)


def test_decode_image_max_pixels_defaults_to_the_context() -> None:
    step = build_step("decode_image", {"mode": "L"}, StepContext(max_image_pixels=99))

    assert isinstance(step, DecodeImage)
    assert step.max_pixels == 99
    with pytest.raises(InvalidInput):
        step(png_bytes(Image.new("L", (10, 10))))


# -- resize ------------------------------------------------------------------------------------


def test_resize_stretch_gives_exactly_the_declared_width_and_height() -> None:
    assert Resize((6, 4), "stretch")(Image.new("L", (20, 10))).size == (6, 4)


def test_resize_fit_keeps_the_aspect_and_pads_with_the_border_colour() -> None:
    image = Image.new("RGB", (20, 10), (100, 150, 200))
    ImageDraw.Draw(image).rectangle((8, 3, 11, 6), fill=(0, 0, 0))

    fitted = pixels(Resize((10, 10), "fit")(image))

    assert fitted.shape == (10, 10, 3)
    # 20x10 becomes 10x5 in the middle: the rows above and below are padding.
    assert (fitted[:2] == [100, 150, 200]).all()
    assert (fitted[-2:] == [100, 150, 200]).all()
    assert fitted[5, 5].tolist() != [100, 150, 200]  # the dark square survived


def test_resize_crop_fills_the_size_with_the_centre() -> None:
    image = Image.new("RGB", (30, 10), (255, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 0, 19, 9), fill=(0, 255, 0))
    draw.rectangle((20, 0, 29, 9), fill=(0, 0, 255))

    cropped = pixels(Resize((10, 10), "crop")(image))

    assert cropped.shape == (10, 10, 3)
    assert (cropped == [0, 255, 0]).all()


def test_resize_leaves_an_image_of_the_right_size_untouched() -> None:
    image = Image.new("L", (4, 4))

    assert Resize((4, 4), "fit")(image) is image


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("resize", {"size": [4, 4], "policy": "squash"}),
        ("resize", {"policy": "fit"}),
        ("decode_image", {"mode": "CMYK"}),
        ("to_array", {"std": [0.0]}),
        ("to_array", {"layout": "NHWC"}),
        ("digit_ink", {"size": 0}),
    ],
)
def test_bad_step_parameters_are_a_manifest_error(name: str, params: dict[str, object]) -> None:
    with pytest.raises(ManifestError, match=f"step '{name}': invalid parameters"):
        build_step(name, params, CONTEXT)


# -- to_array ----------------------------------------------------------------------------------


def test_to_array_scales_normalises_per_channel_in_chw_layout() -> None:
    image = Image.new("RGB", (2, 1))
    image.putpixel((0, 0), (255, 0, 51))
    image.putpixel((1, 0), (102, 204, 153))
    step = build_step(
        "to_array",
        {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.25, 0.5], "layout": "CHW"},
        CONTEXT,
    )

    array = step(image)

    assert array.shape == (3, 1, 2)
    assert array.dtype == np.float32
    expected = [[[1.0, -0.2]], [[-2.0, 1.2]], [[-0.6, 0.2]]]
    np.testing.assert_allclose(array, expected, atol=1e-6)


def test_to_array_gives_grey_images_a_channel_axis_in_hwc_layout() -> None:
    image = Image.fromarray(np.array([[0, 128], [255, 64]], dtype=np.uint8))

    array = ToArray(scale=0.5, mean=(0.0,), std=(1.0,), layout="HWC")(image)

    assert array.shape == (2, 2, 1)
    assert array[:, :, 0].tolist() == [[0.0, 64.0], [127.5, 32.0]]


# -- digit_ink ---------------------------------------------------------------------------------


def seven(size: tuple[int, int] = (64, 64), at: tuple[int, int] = (16, 12)) -> Image.Image:
    """A dark '7' on a light background."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    x, y = at
    draw.line((x, y, x + 30, y), fill=0, width=5)
    draw.line((x + 30, y, x + 12, y + 40), fill=0, width=5)
    return image


DIGIT_INK = DigitInk(size=8, levels=16)


def test_digit_ink_gives_an_8x8_array_in_unit_range() -> None:
    array = DIGIT_INK(seven())

    assert (array.shape, array.dtype) == ((8, 8), np.dtype(np.float32))
    assert array.min() == 0.0 and array.max() == 1.0
    assert array[0, 1:6].tolist() == [1.0] * 5  # the bar of the 7 fills the top row


def test_digit_ink_dark_on_light_equals_light_on_dark() -> None:
    np.testing.assert_array_equal(DIGIT_INK(seven()), DIGIT_INK(ImageOps.invert(seven())))


def test_digit_ink_ignores_where_the_digit_sits_on_the_canvas() -> None:
    moved = seven(size=(100, 80), at=(60, 30))

    np.testing.assert_array_equal(DIGIT_INK(seven()), DIGIT_INK(moved))


def test_digit_ink_centres_the_digit_and_fills_the_height() -> None:
    image = Image.new("L", (80, 60), 255)
    ImageDraw.Draw(image).rectangle((5, 10, 9, 50), fill=0)  # a '1' hugging the left edge

    array = DIGIT_INK(image)

    columns = np.flatnonzero(array.any(axis=0))
    assert columns.tolist() == [3, 4]  # centred: as many empty columns left as right
    assert array.any(axis=1).all()  # top to bottom


def test_digit_ink_blank_or_faint_images_give_zeros() -> None:
    faint = Image.fromarray(np.full((20, 20), 200, np.uint8))
    faint.putpixel((10, 10), 180)  # noise well below real ink

    assert not DIGIT_INK(Image.new("L", (20, 20), 255)).any()
    assert not DIGIT_INK(faint).any()
    assert DIGIT_INK(faint).shape == (8, 8)


def test_a_large_jpeg_is_decoded_at_reduced_size_but_not_below_the_target() -> None:
    photo = Image.new("RGB", (4000, 3000), (200, 40, 40))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=80)
    full = DecodeImage(mode="RGB", max_pixels=25_000_000)
    drafted = DecodeImage(mode="RGB", max_pixels=25_000_000, draft_size=(64, 64))

    assert full(buffer.getvalue()).size == (4000, 3000)
    reduced = drafted(buffer.getvalue())
    assert reduced.size == (500, 375)  # 1/8 scale: the codec's smallest step above 64
    assert min(reduced.size) >= 64


def test_the_pipeline_gives_decode_the_size_of_a_later_resize() -> None:
    from serving.manifest import StepSpec, TensorSpec, VersionSpec
    from serving.pipeline import Pipeline
    from serving.steps import StepContext

    spec = VersionSpec(
        model="m",
        version=1,
        path=Path("."),
        runtime="fake",
        artifact=Path("x"),
        inputs=(TensorSpec("image", "FP32", (-1, 64, 64, 3)),),
        outputs=(TensorSpec("logits", "FP32", (-1, 2)),),
        preprocess=(
            StepSpec("decode_image", {"mode": "RGB"}),
            StepSpec("resize", {"size": [64, 64], "policy": "fit"}),
            StepSpec("to_array", {"scale": 1 / 255}),
        ),
        postprocess=None,
        max_batch_size=8,
        provenance={},
    )
    pipeline = Pipeline.from_spec(spec, StepContext(max_image_pixels=4_000_000))
    photo = Image.new("RGB", (2000, 1000), (10, 200, 10))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG")

    row = pipeline.transform(buffer.getvalue())

    assert pipeline.steps[0] == DecodeImage(mode="RGB", max_pixels=4_000_000, draft_size=(64, 64))
    assert row.shape == (64, 64, 3)

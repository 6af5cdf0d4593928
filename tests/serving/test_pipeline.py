from __future__ import annotations

import base64
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.errors import InvalidInput, ManifestError, UnsupportedMediaType
from serving.manifest import ModelDefaults, PostprocessSpec, TensorSpec, load_version
from serving.pipeline import Pipeline, Postprocessor, Prediction
from serving.steps import Step, StepContext
from serving.steps.image import DecodeImage, DigitInk, Resize, ToArray
from tests.conftest import png_bytes

CONTEXT = StepContext(max_image_pixels=1_000_000)


def pipeline_of(repo: Path, model: str) -> Pipeline:
    spec = load_version(model, repo / model / "1", ModelDefaults())
    return Pipeline.from_spec(spec, CONTEXT)


@pytest.fixture
def img(repo: Path) -> Pipeline:
    """Decode as grey, stretch to 4x4, scale to [0, 1]; input 'pixels' is [-1, 4, 4, 1]."""
    return pipeline_of(repo, "img")


@pytest.fixture
def tab(repo: Path) -> Pipeline:
    """Features a, b, c (c defaults to 0); input 'x' is FP32 [-1, 3]."""
    return pipeline_of(repo, "tab")


WHITE_PNG = png_bytes(Image.new("L", (8, 8), 255))


def test_image_bytes_run_through_the_declared_steps(img: Pipeline) -> None:
    row = img.transform(WHITE_PNG)

    assert (row.shape, row.dtype) == ((4, 4, 1), np.dtype(np.float32))
    np.testing.assert_allclose(row, 1.0)


def test_b64_item_is_decoded_as_an_uploaded_file(img: Pipeline) -> None:
    item = {"b64": base64.b64encode(WHITE_PNG).decode()}

    np.testing.assert_array_equal(img.transform(item), img.transform(WHITE_PNG))


@pytest.mark.parametrize(
    ("item", "message"),
    [({"b64": "not base64!"}, "'b64' is not valid base64"), ({"b64": 12}, "must be a string")],
)
def test_bad_b64_item_is_invalid_input_naming_the_item(
    img: Pipeline, item: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        img.transform(item, index=3)

    assert caught.value.message.startswith("item 3: ")


def test_b64_of_a_non_image_is_unsupported_media(img: Pipeline) -> None:
    with pytest.raises(UnsupportedMediaType):
        img.transform({"b64": base64.b64encode(b"plain text").decode()})


def test_raw_row_of_the_exact_shape_bypasses_the_steps(img: Pipeline) -> None:
    row = img.transform([[[0.25]] * 4] * 4)

    assert (row.shape, row.dtype) == ((4, 4, 1), np.dtype(np.float32))
    np.testing.assert_allclose(row, 0.25)


def test_raw_row_must_match_the_input_shape_exactly(img: Pipeline) -> None:
    # Same number of values as [4, 4, 1], but a client's list is not reshaped for it.
    with pytest.raises(InvalidInput) as caught:
        img.transform([[0.0] * 4] * 4, index=1)

    err = caught.value
    assert err.message == "item 1: input 'pixels' expects shape [4, 4, 1] per item, got [4, 4]"
    assert err.details == {"item": 1, "input": "pixels", "expected": [4, 4, 1], "got": [4, 4]}


def test_ragged_or_non_numeric_row_is_invalid_input_naming_the_input(tab: Pipeline) -> None:
    for row in ([[1, 2], [3]], ["a", "b", "c"]):
        with pytest.raises(InvalidInput, match="input 'x' expects FP32 values"):
            tab.transform(row)


def test_non_finite_values_in_a_row_are_refused(tab: Pipeline) -> None:
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        tab.transform(np.array([1.0, math.nan, 2.0]))


def test_named_features_become_the_ordered_row(tab: Pipeline) -> None:
    assert tab.transform({"b": 2, "a": 1}).tolist() == [1.0, 2.0, 0.0]


def test_step_errors_name_the_item(tab: Pipeline) -> None:
    with pytest.raises(InvalidInput) as caught:
        tab.transform({"a": 1, "b": 2, "typo": 3}, index=4)

    assert caught.value.details["item"] == 4


def test_image_sent_to_a_tabular_model_says_what_the_model_takes(tab: Pipeline) -> None:
    with pytest.raises(InvalidInput) as caught:
        tab.transform(WHITE_PNG, index=0)

    assert caught.value.message == "item 0: this model takes named features, not an image file"
    assert caught.value.details == {"item": 0, "accepts": "features"}


def test_features_sent_to_an_image_model_says_what_the_model_takes(img: Pipeline) -> None:
    with pytest.raises(InvalidInput, match="this model takes an image file, not named features"):
        img.transform({"a": 1})


def test_model_without_steps_takes_only_tensor_rows() -> None:
    pipeline = Pipeline([], TensorSpec("x", "FP32", (-1, 2)))

    assert pipeline.transform([1, 2]).tolist() == [1.0, 2.0]
    with pytest.raises(InvalidInput, match="takes a tensor row"):
        pipeline.transform(WHITE_PNG)


def test_step_array_missing_only_the_channel_axis_is_reshaped() -> None:
    pipeline = Pipeline(
        [DecodeImage("L", 10_000), DigitInk(size=8, levels=16)],
        TensorSpec("pixels", "FP32", (-1, 8, 8, 1)),
    )

    assert pipeline.transform(WHITE_PNG).shape == (8, 8, 1)


def test_step_array_of_another_layout_is_refused_not_reshaped() -> None:
    # A CHW array has as many values as the HWC input, but reshaping would scramble it.
    pipeline = Pipeline(
        [DecodeImage("RGB", 10_000), ToArray(1.0, (0.0,), (1.0,), "CHW")],
        TensorSpec("pixels", "FP32", (-1, 4, 4, 3)),
    )

    with pytest.raises(InvalidInput, match=r"expects shape \[4, 4, 3\] per item, got \[3, 4, 4\]"):
        pipeline.transform(png_bytes(Image.new("RGB", (4, 4))))


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([ToArray(1.0, (0.0,), (1.0,), "HWC"), Resize((4, 4), "fit")], "Resize takes image"),
        ([DecodeImage("L", 100)], "last pre-processing step must produce an array"),
        ([Resize((4, 4), "fit"), DecodeImage("L", 100)], "DecodeImage takes bytes"),
    ],
)
def test_steps_that_do_not_chain_are_a_manifest_error(steps: list[Step], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Pipeline(steps, TensorSpec("x", "FP32", (-1, 4, 4, 1)))


def test_steps_need_a_single_input_model(repo: Path) -> None:
    spec = load_version("img", repo / "img" / "1", ModelDefaults())
    two_inputs = dataclasses.replace(spec, inputs=(*spec.inputs, spec.inputs[0]))

    with pytest.raises(ManifestError, match="exactly one input"):
        Pipeline.from_spec(two_inputs, CONTEXT)


# -- post-processing ---------------------------------------------------------------------------


def post(softmax: bool, top_k: int, labels: tuple[str, ...] = ("a", "b", "c")) -> Postprocessor:
    return Postprocessor(PostprocessSpec("y", softmax=softmax, top_k=top_k, labels=labels))


def test_postprocessor_softmax_turns_logits_into_probabilities() -> None:
    [prediction] = post(True, 2, ("no", "yes"))({"y": np.array([[0.0, math.log(3.0)]])})

    assert prediction == Prediction("yes", 0.75, (("yes", 0.75), ("no", 0.25)))


def test_postprocessor_top_k_is_ordered_best_first_with_labels() -> None:
    outputs = {"y": np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]])}

    first, second = post(False, 3)(outputs)

    assert [label for label, _ in first.top_k] == ["b", "c", "a"]
    assert (second.label, second.score) == ("a", 0.5)
    assert second.to_dict()["top_k"] == [
        {"label": "a", "score": 0.5},
        {"label": "c", "score": 0.4},
        {"label": "b", "score": 0.1},
    ]


def test_postprocessor_clips_top_k_to_the_output_width() -> None:
    [prediction] = post(False, 10)({"y": np.array([[1.0, 2.0, 3.0]])})

    assert len(prediction.top_k) == 3


def test_postprocessor_names_unlabelled_classes_by_index() -> None:
    [prediction] = post(False, 2, labels=("a",))({"y": np.array([[0.0, 0.0, 9.0]])})

    assert [label for label, _ in prediction.top_k] == ["2", "a"]


def test_postprocessor_breaks_ties_by_class_order() -> None:
    [prediction] = post(True, 3)({"y": np.zeros((1, 1, 3))})

    assert [label for label, _ in prediction.top_k] == ["a", "b", "c"]
    assert prediction.score == pytest.approx(1 / 3, abs=1e-6)


def test_a_threshold_turns_unsure_answers_into_the_declared_label() -> None:
    from serving.manifest import PostprocessSpec
    from serving.pipeline import Postprocessor

    post = Postprocessor(
        PostprocessSpec(
            output="y",
            softmax=False,
            top_k=2,
            labels=("cat", "dog"),
            threshold=0.7,
            below_threshold_label="not sure",
        )
    )
    sure, unsure = post({"y": np.asarray([[0.9, 0.1], [0.55, 0.45]])})
    assert sure.label == "cat"
    assert unsure.label == "not sure" and unsure.top_k[0] == ("cat", 0.55)

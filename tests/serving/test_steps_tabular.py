from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from serving.errors import InvalidInput, ManifestError
from serving.steps import StepContext, build_step
from serving.steps.tabular import Features

FEATURES = Features(names=("a", "b", "c"), defaults={"c": 0.5})


def test_features_are_ordered_by_the_declared_names() -> None:
    row = FEATURES({"c": 3, "a": 1.5, "b": -2})

    assert row.tolist() == [1.5, -2.0, 3.0]
    assert row.dtype == np.float64


def test_features_fill_declared_defaults() -> None:
    assert FEATURES({"b": 2, "a": 1}).tolist() == [1.0, 2.0, 0.5]


def test_features_refuse_unknown_names_instead_of_ignoring_them() -> None:
    with pytest.raises(InvalidInput, match=r"unknown feature\(s\) \['bb'\]") as caught:
        FEATURES({"a": 1, "b": 2, "bb": 3})

    assert caught.value.details == {"expected": ["a", "b", "c"], "unknown": ["bb"]}


def test_features_refuse_missing_names_without_default() -> None:
    with pytest.raises(InvalidInput, match=r"missing feature\(s\) \['a', 'b'\]") as caught:
        FEATURES({"c": 1})

    assert caught.value.details["missing"] == ["a", "b"]


@pytest.mark.parametrize(
    ("value", "kind"),
    [("1.5", "str"), (True, "bool"), (None, "NoneType"), ([1], "list"), ({"v": 1}, "dict")],
)
def test_features_refuse_values_that_are_not_numbers(value: Any, kind: str) -> None:
    with pytest.raises(InvalidInput, match=f"feature 'b' must be a number, got {kind}") as caught:
        FEATURES({"a": 1, "b": value})

    assert caught.value.details == {"feature": "b"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_features_refuse_non_finite_numbers(value: float) -> None:
    with pytest.raises(InvalidInput, match="feature 'a' must be finite"):
        FEATURES({"a": value, "b": 1})


def test_features_step_is_built_from_manifest_parameters() -> None:
    step = build_step(
        "features", {"names": ["x", "y"], "defaults": {"y": 2}}, StepContext(max_image_pixels=1)
    )

    assert (step.consumes, step.produces) == ("features", "array")
    assert step({"x": 1}).tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"names": []},
        {"names": ["x", "x"]},
        {"names": ["x"], "defaults": {"z": 1}},
        {"names": ["x"], "defaults": {"x": "high"}},
    ],
    ids=["no-names", "empty", "duplicate", "default-unknown", "default-not-number"],
)
def test_features_step_with_bad_parameters_is_a_manifest_error(params: dict[str, Any]) -> None:
    with pytest.raises(ManifestError, match="step 'features': invalid parameters"):
        build_step("features", params, StepContext(max_image_pixels=1))

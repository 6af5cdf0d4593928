"""Pipelines: what a version declares to turn client items into tensors and outputs into labels."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from serving.errors import InvalidInput, ManifestError
from serving.manifest import PostprocessSpec, TensorSpec, VersionSpec
from serving.steps import Step, StepContext, build_step
from serving.steps.image import DecodeImage, Resize

# An item is one thing to predict: the bytes of an uploaded file, a mapping of named features
# (or {"b64": ...} holding a file, as TF Serving clients send), or a raw nested list/array
# already shaped like one row of the model input.
Item = bytes | Mapping[str, Any] | Sequence[Any] | np.ndarray

_KIND_NAMES = {"bytes": "an image file", "features": "named features"}


def _without_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _decode_b64(item: Mapping[str, Any], index: int) -> bytes:
    value = item["b64"]
    if not isinstance(value, str):
        raise InvalidInput(f"item {index}: 'b64' must be a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInput(f"item {index}: 'b64' is not valid base64") from err


class Pipeline:
    """Pre-processing for a single-input model: declared steps, then a check against the input.

    Raw rows (lists or arrays) bypass the steps: a client that already holds tensors should not
    pay for, or be second-guessed by, pre-processing.
    """

    def __init__(self, steps: Sequence[Step], target: TensorSpec) -> None:
        for before, after in itertools.pairwise(steps):
            if before.produces != after.consumes:
                raise ManifestError(
                    f"step {type(after).__name__} takes {after.consumes} but the step before "
                    f"it produces {before.produces}"
                )
        if steps and steps[-1].produces != "array":
            raise ManifestError("the last pre-processing step must produce an array")
        self._steps = tuple(steps)
        self.target = target
        self.accepts = steps[0].consumes if steps else "array"

    @classmethod
    def from_spec(cls, spec: VersionSpec, context: StepContext) -> Pipeline:
        if len(spec.inputs) != 1 and spec.preprocess:
            raise ManifestError("pre-processing steps need a model with exactly one input")
        steps = [build_step(s.step, s.params, context) for s in spec.preprocess]
        resize = next((s for s in steps if isinstance(s, Resize)), None)
        if steps and isinstance(steps[0], DecodeImage) and resize is not None:
            steps[0] = dataclasses.replace(steps[0], draft_size=resize.size)
        return cls(steps, spec.inputs[0])

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    def self_test(self) -> None:
        """Push a synthetic item through the steps; raises ManifestError if the result cannot
        be the declared input, so a wrong pipeline fails at load, not on every request."""
        sample: Item
        if self.accepts == "bytes":
            image = Image.new("RGB", (40, 48), (240, 240, 240))
            ImageDraw.Draw(image).rectangle((12, 10, 26, 38), fill=(20, 20, 20))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            sample = buffer.getvalue()
        elif self.accepts == "features":
            sample = dict.fromkeys(getattr(self._steps[0], "names", ()), 0.0)
        else:
            return
        try:
            self.transform(sample)
        except InvalidInput as err:
            raise ManifestError(f"pre-processing does not fit the input: {err.message}") from err

    def transform(self, item: Item, index: int = 0) -> np.ndarray:
        """One item to one row of the input tensor; raises InvalidInput naming the item."""
        if isinstance(item, Mapping) and set(item) == {"b64"}:
            item = _decode_b64(item, index)
        if isinstance(item, (bytes, bytearray)):
            value = self._run("bytes", bytes(item), index)
        elif isinstance(item, Mapping):
            value = self._run("features", item, index)
        else:
            value = item
        return self._fit(value, index)

    def _run(self, kind: str, value: Any, index: int) -> Any:
        if self.accepts != kind:
            wanted = _KIND_NAMES.get(self.accepts, "a tensor row (a nested list of numbers)")
            raise InvalidInput(
                f"item {index}: this model takes {wanted}, not {_KIND_NAMES[kind]}",
                details={"item": index, "accepts": self.accepts},
            )
        for step in self._steps:
            try:
                value = step(value)
            except InvalidInput as err:
                err.details.setdefault("item", index)
                raise
        return value

    def _fit(self, value: Any, index: int) -> np.ndarray:
        expected = self.target.item_shape
        try:
            array = np.asarray(value, dtype=self.target.dtype)
        except (TypeError, ValueError) as err:
            raise InvalidInput(
                f"item {index}: input '{self.target.name}' expects {self.target.datatype} values",
                details={"item": index, "input": self.target.name},
            ) from err
        if (
            array.shape != expected
            and isinstance(value, np.ndarray)
            and _without_ones(array.shape) == _without_ones(expected)
        ):
            # A step's array that only lacks the channel axis (8x8 for 8x8x1) is the same row;
            # a client's raw list must match exactly. Same size is not enough: CHW reshaped
            # to HWC would scramble the pixels.
            array = array.reshape(expected)
        if array.shape != expected:
            raise InvalidInput(
                f"item {index}: input '{self.target.name}' expects shape {list(expected)} per "
                f"item, got {list(array.shape)}",
                details={
                    "item": index,
                    "input": self.target.name,
                    "expected": list(expected),
                    "got": list(array.shape),
                },
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInput(f"item {index}: NaN or infinite values are not accepted")
        return array


@dataclass(frozen=True)
class Prediction:
    """One item's answer: the top label and score, and the ``top_k`` best."""

    label: str
    score: float
    top_k: tuple[tuple[str, float], ...]
    # Every class's probability in label order: what ensembles average.
    scores: tuple[float, ...] = field(default=(), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "top_k": [{"label": label, "score": score} for label, score in self.top_k],
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return result


class Postprocessor:
    """Outputs to predictions: softmax when the model emits logits, then top-k with labels."""

    def __init__(self, spec: PostprocessSpec) -> None:
        self._spec = spec

    def __call__(self, outputs: Mapping[str, np.ndarray]) -> list[Prediction]:
        scores = np.asarray(outputs[self._spec.output], dtype=np.float64)
        scores = scores.reshape(scores.shape[0], -1)
        if self._spec.softmax:
            scores = softmax(scores)
        predictions = [rank(row, self._spec.labels, self._spec.top_k) for row in scores]
        threshold = self._spec.threshold
        if threshold is None:
            return predictions
        # The top-k still says what the model thought; only the headline label declines.
        return [
            p
            if p.score >= threshold
            else dataclasses.replace(p, label=self._spec.below_threshold_label)
            for p in predictions
        ]

    @property
    def labels(self) -> tuple[str, ...]:
        return self._spec.labels

    @property
    def top_k(self) -> int:
        return self._spec.top_k


def rank(row: np.ndarray, labels: Sequence[str], top_k: int) -> Prediction:
    """One row of class scores to a Prediction with the ``top_k`` best, labelled."""
    k = max(1, min(top_k, row.shape[0]))
    best = np.argsort(-row, kind="stable")[:k]
    top = tuple(
        (labels[i] if i < len(labels) else str(int(i)), round(float(row[i]), 6)) for i in best
    )
    return Prediction(
        label=top[0][0], score=top[0][1], top_k=top, scores=tuple(float(v) for v in row)
    )

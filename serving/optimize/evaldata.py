"""The holdout and calibration sets a model declares in its ``model.toml``.

::

    holdout = "holdout.npz"             # a file next to model.toml
    calibration = "calibration.npz"

    [holdout]                           # or: produced by the model's training script
    generator = "training.shapes:holdout_set"

A file is an ``.npz`` with ``x`` (one input) or one array per input name, plus ``y`` (integer
class labels; optional for calibration). A generator is a function of a ``training.*`` module
returning ``(x, y)`` the same way. Either way ``x`` is in the model's *tensor* input space:
what the pre-processing steps produce, not raw images.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from serving.errors import EvaluationDataError
from serving.manifest import MODEL_FILE, TensorSpec

Kind = Literal["holdout", "calibration"]

# model.toml is data, but a generator is code: only the repository's own training scripts may
# be named, never an arbitrary module.
GENERATOR_PACKAGE = "training."


@dataclass(frozen=True)
class EvalSet:
    """Inputs by manifest input name (float arrays, batch first) and optional labels."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    origin: str

    def __len__(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: x[start:stop] for name, x in self.inputs.items()}


def declared(model_dir: Path, kind: Kind) -> tuple[str, bool] | None:
    """What ``model.toml`` declares for ``kind``: (a file name, False) or (a generator, True)."""
    path = model_dir / MODEL_FILE
    if not path.exists():
        return None
    try:
        with path.open("rb") as fh:
            value = tomllib.load(fh).get(kind)
    except tomllib.TOMLDecodeError as err:
        raise EvaluationDataError(f"{MODEL_FILE} is not valid TOML: {err}") from err
    if value is None:
        return None
    if isinstance(value, str):
        return value, False
    if isinstance(value, dict) and isinstance(value.get("generator"), str):
        return value["generator"], True
    raise EvaluationDataError(
        f"{MODEL_FILE}: '{kind}' must be a file name or a table with a 'generator'"
    )


def _from_file(model_dir: Path, name: str) -> tuple[Any, Any]:
    path = (model_dir / name).resolve()
    if not path.is_relative_to(model_dir.resolve()):
        raise EvaluationDataError(f"'{name}' must be inside the model's directory")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise EvaluationDataError(f"cannot read {name}: {err}") from err
    labels = arrays.pop("y", None)
    x = arrays.pop("x") if "x" in arrays else arrays
    return x, labels


def _from_generator(spec: str) -> tuple[Any, Any]:
    module_name, _, function = spec.partition(":")
    if not module_name.startswith(GENERATOR_PACKAGE) or not function:
        raise EvaluationDataError(
            f"generator '{spec}' must be written 'training.<script>:<function>'"
        )
    try:
        produce = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as err:
        raise EvaluationDataError(f"generator '{spec}' cannot be found: {err}") from err
    result = produce()
    if not isinstance(result, tuple) or len(result) != 2:
        raise EvaluationDataError(f"generator '{spec}' must return (x, y)")
    return result[0], result[1]


def load(model_dir: Path, kind: Kind, inputs: tuple[TensorSpec, ...]) -> EvalSet:
    """The declared ``kind`` set of the model at ``model_dir``, checked against ``inputs``.

    Raises EvaluationDataError when nothing is declared, the data cannot be read, or its
    shapes do not fit the signature (a holdout needs labels for every row).
    """
    found = declared(model_dir, kind)
    if found is None:
        raise EvaluationDataError(
            f"model '{model_dir.name}' declares no {kind} set: add `{kind} = \"{kind}.npz\"` "
            f"(arrays x and y in the input tensor space) to models/{model_dir.name}/{MODEL_FILE}"
        )
    origin, generated = found
    x, labels = _from_generator(origin) if generated else _from_file(model_dir, origin)
    if not isinstance(x, Mapping):
        if len(inputs) != 1:
            raise EvaluationDataError(
                f"{origin}: the model has {len(inputs)} inputs; give one array per input name"
            )
        x = {inputs[0].name: x}
    arrays: dict[str, np.ndarray] = {}
    for tensor in inputs:
        if tensor.name not in x:
            raise EvaluationDataError(f"{origin} has no array for input '{tensor.name}'")
        array = np.ascontiguousarray(x[tensor.name], dtype=tensor.dtype)
        expected = tensor.item_shape
        if array.ndim != len(tensor.shape) or any(
            e not in (-1, a) for e, a in zip(expected, array.shape[1:], strict=True)
        ):
            raise EvaluationDataError(
                f"{origin}: input '{tensor.name}' rows have shape {list(array.shape[1:])}, "
                f"the model expects {list(expected)}"
            )
        arrays[tensor.name] = array
    sizes = {a.shape[0] for a in arrays.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise EvaluationDataError(f"{origin}: the inputs must have the same, non-zero row count")
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        if labels.shape[0] != next(iter(sizes)):
            raise EvaluationDataError(f"{origin}: y has {labels.shape[0]} labels for {sizes} rows")
    elif kind == "holdout":
        raise EvaluationDataError(f"{origin}: a holdout set needs labels (y)")
    return EvalSet(inputs=arrays, labels=labels, origin=origin)

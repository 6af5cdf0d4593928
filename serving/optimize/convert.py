"""Keras files to SavedModels, SavedModels to TFLite in each optimization mode.

TensorFlow is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import ConversionFailed, ImportFailed
from serving.optimize.evaldata import EvalSet

# float32: inference graph only (training ops stripped, batch norm folded), weights as trained.
# float16: weights stored as float16, computed in float32: half the size, same speed.
# dynamic: int8 weights, activations quantized on the fly: about a quarter of the size.
# int8: weights and activations int8, ranges calibrated on the model's calibration samples;
#       inputs and outputs stay float32 so the manifest's signature and pipeline are unchanged.
MODES = ("float32", "float16", "dynamic", "int8")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_keras(path: Path) -> Any:
    """Load a Keras model file for inference (no optimizer state); raises ImportFailed."""
    import tensorflow as tf

    try:
        return tf.keras.models.load_model(str(path), compile=False)
    except (OSError, ValueError, TypeError) as err:
        raise ImportFailed(f"cannot load the Keras model {path.name}: {err}") from err


def export_keras(model: Any, target: Path) -> None:
    """Export ``model``'s inference function as a SavedModel at ``target``.

    Outputs are returned as a dict named after the output layers, so the signature says
    ``logits`` rather than ``output_0``; input names come from the ``keras.Input`` names.
    """
    import tensorflow as tf

    names = list(getattr(model, "output_names", None) or [])
    outputs = list(model.outputs)
    if len(names) != len(outputs):
        names = [f"output_{i}" for i in range(len(outputs))]
    named = tf.keras.Model(model.inputs, dict(zip(names, outputs, strict=True)), name=model.name)
    named.export(str(target), format="tf_saved_model", verbose=False)


def signature_inputs(saved_model: Path) -> list[str]:
    """The input names of a SavedModel's ``serving_default`` signature, in order."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    return list(signature.structured_input_signature[1])


def _representative(
    calibration: EvalSet, names: Mapping[str, str]
) -> Iterator[dict[str, np.ndarray]]:
    for i in range(len(calibration)):
        yield {names[k]: v for k, v in calibration.rows(i, i + 1).items()}


def to_tflite(
    saved_model: Path,
    mode: str,
    calibration: EvalSet | None = None,
    input_names: Mapping[str, str] | None = None,
) -> bytes:
    """Convert a SavedModel's ``serving_default`` to a TFLite flatbuffer in ``mode``.

    ``int8`` needs ``calibration`` and ``input_names`` (manifest input name -> signature input
    name). Raises ConversionFailed with the converter's reason.
    """
    if mode not in MODES:
        raise ConversionFailed(f"unknown mode '{mode}' (known: {', '.join(MODES)})")
    import tensorflow as tf
    from tensorflow.lite.python.convert_phase import ConverterError

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model), signature_keys=["serving_default"]
    )
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        if calibration is None or input_names is None:
            raise ConversionFailed("int8 needs the model's calibration samples")
        names = dict(input_names)
        converter.representative_dataset = lambda: _representative(calibration, names)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with warnings.catch_warnings():
            # The calibrator runs TensorFlow's own (deprecated) tf.lite.Interpreter internally;
            # its deprecation warning is about TensorFlow's code, not ours.
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter")
            data: bytes = converter.convert()
    except (ConverterError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionFailed(f"the TFLite converter failed in mode {mode}: {reason}") from err
    return data

"""Import an artifact made elsewhere as a new version, with a manifest a person can read and edit.

A Keras file becomes a SavedModel version (the server has no Keras runtime), a SavedModel
directory is copied as it is, a TFLite file too. The signature is read from the artifact, the
pre-processing is suggested from the input shape, the labels come from a file if given. The
version is loaded and warmed up in a hidden staging directory before it is published with one
rename. TensorFlow is imported only when this runs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import ImportFailed, ManifestError, RuntimeLoadError, UnsupportedSource
from serving.manifest import (
    MANIFEST_FILE,
    ModelDefaults,
    datatype_of,
    load_model_defaults,
    load_version,
)
from serving.optimize.convert import KERAS_SUFFIXES, export_keras, load_keras
from serving.optimize.measure import artifact_bytes, artifact_sha256, open_runtime
from serving.optimize.publish import check_model_name, publish, staging
from serving.pipeline import Pipeline
from serving.settings import ServingSettings
from serving.steps import StepContext
from serving.tomlwrite import dumps_toml

TFLITE_IDENTIFIER = b"TFL3"  # bytes 4..8 of every TFLite flatbuffer


@dataclass(frozen=True)
class ImportResult:
    model: str
    version: int
    path: Path
    source_format: str
    manifest: str


def source_format(path: Path) -> str:
    """``keras``, ``savedmodel`` or ``tflite``; raises UnsupportedSource for anything else."""
    if not path.exists():
        raise UnsupportedSource(f"'{path}' does not exist")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "savedmodel"
    elif path.is_file():
        if path.suffix.lower() in KERAS_SUFFIXES:
            return "keras"
        with path.open("rb") as fh:
            if fh.read(8)[4:] == TFLITE_IDENTIFIER:
                return "tflite"
    raise UnsupportedSource(
        f"'{path.name}' is not a Keras file ({', '.join(KERAS_SUFFIXES)}), a SavedModel "
        "directory (with saved_model.pb) or a TFLite file"
    )


def _tensor(name: str, dtype: Any, shape: Any) -> dict[str, Any]:
    try:
        datatype = datatype_of(np.dtype(dtype))
    except (KeyError, TypeError) as err:
        raise ImportFailed(f"tensor '{name}' has a type the server cannot carry: {dtype}") from err
    dims = [int(d) if d is not None and int(d) > 0 else -1 for d in list(shape)]
    if not dims:
        raise ImportFailed(f"tensor '{name}' is a scalar; the server needs a batch axis")
    # The first axis is the batch, whatever size the artifact was traced with.
    return {"name": name, "datatype": datatype, "shape": [-1, *dims[1:]]}


def _savedmodel_signature(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import tensorflow as tf

    try:
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    except (OSError, KeyError, ValueError) as err:
        raise ImportFailed(f"cannot read the serving_default signature: {err}") from err
    inputs = [
        _tensor(name, spec.dtype.as_numpy_dtype, spec.shape.as_list())
        for name, spec in signature.structured_input_signature[1].items()
    ]
    outputs = [
        _tensor(name, spec.dtype.as_numpy_dtype, spec.shape.as_list())
        for name, spec in signature.structured_outputs.items()
    ]
    return inputs, outputs


def _tflite_signature(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as err:
        raise ImportFailed(f"cannot read the TFLite file: {err}") from err
    signatures = interpreter.get_signature_list()
    if signatures:
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        runner = interpreter.get_signature_runner(key)
        ins = list(runner.get_input_details().items())
        outs = list(runner.get_output_details().items())
    else:
        ins = [(d["name"], d) for d in interpreter.get_input_details()]
        outs = [(d["name"], d) for d in interpreter.get_output_details()]
    return (
        [_tensor(n, d["dtype"], d["shape_signature"]) for n, d in ins],
        [_tensor(n, d["dtype"], d["shape_signature"]) for n, d in outs],
    )


def suggest_preprocess(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pre-processing a single float input of this shape most likely wants: an image decoded,
    fitted and scaled to [0, 1] for [-1, H, W, 1 or 3]; named features for [-1, N]."""
    if len(inputs) != 1 or inputs[0]["datatype"] != "FP32":
        return []
    shape = inputs[0]["shape"]
    if len(shape) == 4 and shape[3] in (1, 3) and shape[1] > 0 and shape[2] > 0:
        return [
            {"step": "decode_image", "mode": "L" if shape[3] == 1 else "RGB"},
            {"step": "resize", "size": [shape[2], shape[1]], "policy": "fit"},
            {"step": "to_array", "scale": 1.0 / 255.0},
        ]
    if len(shape) == 2 and shape[1] > 0:
        return [{"step": "features", "names": [f"feature_{i}" for i in range(shape[1])]}]
    return []


def _read_labels(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ImportFailed(f"cannot read the labels file {path.name}: {err}") from err
    return [line.strip() for line in lines if line.strip()]


def _postprocess(
    outputs: list[dict[str, Any]], labels: list[str] | None, probabilities: bool
) -> dict[str, Any] | None:
    scored = [o for o in outputs if len(o["shape"]) == 2 and o["shape"][1] > 0]
    if not scored:
        return None
    output = scored[0]
    classes = output["shape"][1]
    table: dict[str, Any] = {
        "output": output["name"],
        "softmax": not probabilities,
        "top_k": min(3, classes),
    }
    if labels is not None:
        if len(labels) != classes:
            raise ImportFailed(
                f"the labels file has {len(labels)} labels; output '{output['name']}' "
                f"scores {classes} classes"
            )
        table["labels"] = labels
    return table


def _outputs_probabilities(keras_model: Any) -> bool:
    last = keras_model.layers[-1] if keras_model.layers else None
    activation = getattr(last, "activation", None)
    return type(last).__name__ == "Softmax" or getattr(activation, "__name__", "") == "softmax"


def _header(
    source: Path, digest: str, created: str, inputs: list[dict[str, Any]], steps: list[Any]
) -> str:
    shape = inputs[0]["shape"] if len(inputs) == 1 else [i["shape"] for i in inputs]
    if not steps:
        check = "# - no [[preprocess]]: clients send tensors (v2 protocol) until you add steps;\n"
    elif steps[0]["step"] == "features":
        check = (
            f"# - [[preprocess]] is only suggested from the input shape {shape}: name the\n"
            "#   features in the order the model was trained on;\n"
        )
    else:
        check = (
            f"# - [[preprocess]] is only suggested from the input shape {shape}: check the\n"
            "#   colour mode, the resize policy and the scaling (mean/std) of the training;\n"
        )
    return (
        f"# Imported by `flask models import` from {source.name} (sha256 {digest[:16]})\n"
        f"# on {created}. Read and edit it before traffic reaches this version:\n"
        "# - inputs and outputs were read from the artifact's signature;\n"
        f"{check}"
        "# - [postprocess] softmax = true means the output holds logits, not probabilities.\n\n"
    )


def import_model(
    root: Path, source: Path, model: str, *, labels_file: Path | None = None
) -> ImportResult:
    """Write ``source`` (Keras file, SavedModel directory or TFLite file) as the next version of
    ``model`` (created if new) under ``root``; returns the version and the manifest text.

    Raises UnsupportedSource for other files, ImportFailed when the artifact cannot be read,
    has tensors the server cannot carry, does not match the labels, or does not load and answer
    a warm-up inference. Nothing is written then.
    """
    check_model_name(model)
    kind = source_format(source)
    labels = _read_labels(labels_file) if labels_file is not None else None
    model_dir = root / model
    defaults = load_model_defaults(model_dir) if model_dir.is_dir() else ModelDefaults()
    context = StepContext(max_image_pixels=ServingSettings(model_root=root).max_image_pixels)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    with staging(root, "import") as stage:
        candidate = stage / "1"
        candidate.mkdir()
        probabilities = False
        if kind == "keras":
            keras_model = load_keras(source)
            probabilities = _outputs_probabilities(keras_model)
            artifact = candidate / "saved_model"
            export_keras(keras_model, artifact)
            inputs, outputs = _savedmodel_signature(artifact)
        elif kind == "savedmodel":
            artifact = candidate / "saved_model"
            shutil.copytree(source, artifact)
            inputs, outputs = _savedmodel_signature(artifact)
        else:
            artifact = candidate / "model.tflite"
            shutil.copyfile(source, artifact)
            inputs, outputs = _tflite_signature(artifact)
        manifest: dict[str, Any] = {
            "runtime": "tflite" if kind == "tflite" else "savedmodel",
            "artifact": artifact.name,
            "max_batch_size": 32,
            "inputs": inputs,
            "outputs": outputs,
            "preprocess": suggest_preprocess(inputs),
        }
        post = _postprocess(outputs, labels, probabilities)
        if post is not None:
            manifest["postprocess"] = post
        digest = artifact_sha256(source)
        manifest["provenance"] = {
            "imported_from": source.name,
            "format": kind,
            "sha256": digest,
            "imported_at": created,
            "artifact_bytes": artifact_bytes(artifact),
        }
        text = _header(source, digest, created, inputs, manifest["preprocess"])
        text += dumps_toml(manifest)
        (candidate / MANIFEST_FILE).write_text(text, encoding="utf-8")
        try:
            spec = load_version(model, candidate, defaults)
            Pipeline.from_spec(spec, context).self_test()
            runtime = open_runtime(spec)
            try:
                runtime.predict(
                    {t.name: np.zeros((1, *t.item_shape), dtype=t.dtype) for t in spec.inputs}
                )
            finally:
                runtime.unload()
        except (ManifestError, RuntimeLoadError) as err:
            raise ImportFailed(f"the imported version does not load: {err.message}") from err
        number = publish(candidate, model_dir)
    return ImportResult(
        model=model,
        version=number,
        path=model_dir / str(number),
        source_format=kind,
        manifest=text,
    )

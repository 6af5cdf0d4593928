"""Helpers shared by the training scripts.

Exporting Keras models as SavedModel, converting them to TFLite, evaluating the
*served* artifacts (not the in-memory Keras model), measuring artifact sizes,
writing TOML (with serving.tomlwrite) and replacing version directories atomically.

TensorFlow / Keras are imported inside the functions that need them, so this
module itself is cheap to import.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from serving.tomlwrite import dumps_toml

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
SEED = 0
MAX_BATCH_SIZE = 32
OUTPUT_NAME = "logits"


# --------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ info logging (must run before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def set_determinism(seed: int = SEED) -> None:
    """Seed Python, numpy and TensorFlow, and make TF ops deterministic."""
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    keras.backend.clear_session()  # fresh global state (layer names, seed generators)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def framework_versions(tflite: bool = False) -> str:
    import keras
    import tensorflow as tf

    text = f"tensorflow {tf.__version__}, keras {keras.__version__}"
    if tflite:
        from importlib.metadata import version

        text += f", ai-edge-litert {version('ai-edge-litert')}"
    return text


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=MODELS_DIR,
        help="where to write models/<name>/... (default: %(default)s)",
    )
    parser.add_argument(
        "--eval-data-only",
        action="store_true",
        help="write model.toml and the holdout/calibration data, train nothing",
    )
    return parser.parse_args()


def stratified_split(x: np.ndarray, y: np.ndarray, test_size: float = 0.2, random_state: int = 0):
    """Stratified 80/20 split (sklearn), returns x_train, x_test, y_train, y_test."""
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_size, stratify=y, random_state=random_state)


# --------------------------------------------------------------------------
# Export / conversion
# --------------------------------------------------------------------------


def with_named_output(model, output_name: str = OUTPUT_NAME):
    """Wrap a single-output functional model so its output is a dict ``{output_name: ...}``.

    ``model.export()`` names a plain tensor output ``output_0`` in the serving
    signature; a dict output keeps its key as the signature output name (for
    SavedModel and for the TFLite signature converted from it).  The input name
    comes from ``keras.Input(name=...)``.  Layers (and weights) are shared.
    """
    import keras

    return keras.Model(model.inputs, {output_name: model.outputs[0]}, name=model.name)


def export_savedmodel(model, path: Path) -> None:
    """Export ``model`` for inference as a TF SavedModel at ``path`` (Keras 3 ``model.export``)."""
    model.export(str(path), format="tf_saved_model", verbose=False)
    # Keras writes an empty assets/ directory; git cannot track empty
    # directories, so drop it to keep a checkout identical to a fresh build.
    assets = Path(path) / "assets"
    if assets.is_dir() and not any(assets.iterdir()):
        assets.rmdir()


def convert_to_tflite(saved_model_dir: Path, tflite_path: Path) -> None:
    """Convert a SavedModel to a float32 TFLite flatbuffer (no quantisation)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    tflite_path.write_bytes(converter.convert())


def artifact_bytes(path: Path) -> int:
    """Size of a file, or the total size of every file under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------
# Evaluating the served artifacts
# --------------------------------------------------------------------------


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def savedmodel_signature(path: Path) -> dict[str, str]:
    """Human-readable description of the SavedModel ``serving_default`` signature."""
    import tensorflow as tf

    sig = tf.saved_model.load(str(path)).signatures["serving_default"]
    return {
        "structured_input_signature": repr(sig.structured_input_signature),
        "structured_outputs": repr(sig.structured_outputs),
    }


def tflite_signature(path: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    return {
        "signature_list": interpreter.get_signature_list(),
        "inputs": {
            k: (v["dtype"].__name__, v["shape_signature"].tolist())
            for k, v in runner.get_input_details().items()
        },
        "outputs": {
            k: (v["dtype"].__name__, v["shape_signature"].tolist())
            for k, v in runner.get_output_details().items()
        },
    }


def predict_savedmodel(
    path: Path, x: np.ndarray, input_name: str, output_name: str, batch_size: int = MAX_BATCH_SIZE
) -> np.ndarray:
    """Run ``x`` through the SavedModel's ``serving_default`` signature in batches."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    sig = loaded.signatures["serving_default"]
    outs = [
        sig(**{input_name: tf.constant(x[s], dtype=tf.float32)})[output_name].numpy()
        for s in _batches(len(x), batch_size)
    ]
    return np.concatenate(outs, axis=0)


def predict_tflite(
    path: Path, x: np.ndarray, input_name: str, output_name: str, batch_size: int = MAX_BATCH_SIZE
) -> np.ndarray:
    """Run ``x`` through the TFLite ``serving_default`` signature runner in batches."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    outs = [
        runner(**{input_name: np.ascontiguousarray(x[s], dtype=np.float32)})[output_name]
        for s in _batches(len(x), batch_size)
    ]
    return np.concatenate(outs, axis=0)


def evaluate_artifact(
    runtime: str,
    path: Path,
    x: np.ndarray,
    y: np.ndarray,
    input_name: str,
    output_name: str = OUTPUT_NAME,
) -> float:
    """Accuracy of the served artifact (argmax of its output) on ``(x, y)``."""
    if runtime == "savedmodel":
        scores = predict_savedmodel(path, x, input_name, output_name)
    elif runtime == "tflite":
        scores = predict_tflite(path, x, input_name, output_name)
    else:
        raise ValueError(f"unknown runtime {runtime!r}")
    return float(np.mean(np.argmax(scores, axis=-1) == np.asarray(y)))


def version_manifest(
    *,
    script: str,
    runtime: str,
    artifact: str,
    input_name: str,
    input_shape: list[int],
    classes: int,
    preprocess: list[dict[str, Any]],
    provenance: Mapping[str, Any],
) -> Callable[[float, int, str], dict[str, Any]]:
    """The manifest of one version, completed once the artifact is measured: ``make(holdout
    accuracy, artifact bytes, framework versions)``. ``provenance`` holds the script's own
    facts (dataset, split, architecture, epochs...)."""

    def make(accuracy: float, size: int, framework: str) -> dict[str, Any]:
        facts = dict(provenance)
        holdout_size = facts.pop("holdout_size")
        trailing = {k: facts.pop(k) for k in ("architecture", "epochs") if k in facts}
        return {
            "runtime": runtime,
            "artifact": artifact,
            "max_batch_size": MAX_BATCH_SIZE,
            "inputs": [{"name": input_name, "datatype": "FP32", "shape": [-1, *input_shape]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, classes]}],
            "preprocess": preprocess,
            "postprocess": {"output": OUTPUT_NAME, "softmax": True, "top_k": 3},
            "provenance": {
                "trained_by": script,
                **facts,
                "holdout_accuracy": accuracy,
                "holdout_size": holdout_size,
                "artifact_bytes": size,
                "framework": framework,
                **trailing,
                "seed": SEED,
            },
        }

    return make


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_model_toml(
    model_dir: Path,
    description: str,
    labels: list[str],
    policy: str = "all",
    *,
    holdout: str | Mapping[str, str] | None = None,
    calibration: str | Mapping[str, str] | None = None,
) -> None:
    """``holdout`` and ``calibration`` declare the evaluation data `flask models optimize`
    uses: a file name next to model.toml, or ``{"generator": "training.<script>:<function>"}``."""
    data: dict[str, Any] = {"description": description, "labels": list(labels)}
    if holdout is not None:
        data["holdout"] = holdout
    if calibration is not None:
        data["calibration"] = calibration
    data["version_policy"] = {"policy": policy}
    write_text_atomic(model_dir / "model.toml", dumps_toml(data))


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write a compressed ``.npz`` next to its final name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(path)


CALIBRATION_SIZE = 200


def calibration_rows(n: int, size: int = CALIBRATION_SIZE, seed: int = SEED) -> np.ndarray:
    """Sorted indices of ``size`` training rows (all of them if fewer) for int8 calibration."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


# --------------------------------------------------------------------------
# Building one immutable version directory
# --------------------------------------------------------------------------


def replace_dir(staging: Path, target: Path) -> None:
    """Move a fully built ``staging`` directory to ``target``, replacing any old one."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old)


def build_version(
    model,
    model_dir: Path,
    version: int,
    runtime: str,
    input_name: str,
    x_holdout: np.ndarray,
    y_holdout: np.ndarray,
    manifest: Callable[[float, int, str], dict[str, Any]],
    output_name: str = OUTPUT_NAME,
) -> dict[str, Any]:
    """Export ``model`` as version ``version`` of the model at ``model_dir``.

    The artifact is built in a temporary directory next to the target, evaluated
    there (the *served* artifact, not the Keras model), then the manifest is
    written and the directory is moved into place, replacing an older build.

    ``manifest(holdout_accuracy, artifact_bytes, framework)`` returns the manifest
    dict.  Returns a summary for printing.
    """
    if runtime not in ("savedmodel", "tflite"):
        raise ValueError(f"unknown runtime {runtime!r}")
    model_dir.mkdir(parents=True, exist_ok=True)
    serving = with_named_output(model, output_name)
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".staging-{version}-"))
    try:
        if runtime == "savedmodel":
            artifact = staging / "saved_model"
            export_savedmodel(serving, artifact)
            signature = savedmodel_signature(artifact)
        else:
            artifact = staging / "model.tflite"
            with tempfile.TemporaryDirectory(prefix="savedmodel-") as tmp:
                export_savedmodel(serving, Path(tmp) / "saved_model")
                convert_to_tflite(Path(tmp) / "saved_model", artifact)
            signature = tflite_signature(artifact)
        accuracy = evaluate_artifact(
            runtime, artifact, x_holdout, y_holdout, input_name, output_name
        )
        size = artifact_bytes(artifact)
        data = manifest(round(accuracy, 4), size, framework_versions(tflite=runtime == "tflite"))
        _check_manifest(data, runtime, artifact.name, input_name, output_name)
        (staging / "manifest.toml").write_text(dumps_toml(data), encoding="utf-8")
        target = model_dir / str(version)
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "model": model_dir.name,
        "version": version,
        "runtime": runtime,
        "holdout_accuracy": accuracy,
        "holdout_size": len(y_holdout),
        "artifact_bytes": size,
        "signature": signature,
        "path": target / artifact.name,
    }


def _check_manifest(
    data: Mapping[str, Any], runtime: str, artifact: str, input_name: str, output_name: str
) -> None:
    assert data["runtime"] == runtime, data["runtime"]
    assert data["artifact"] == artifact, data["artifact"]
    assert [i["name"] for i in data["inputs"]] == [input_name], data["inputs"]
    assert [o["name"] for o in data["outputs"]] == [output_name], data["outputs"]
    assert data["postprocess"]["output"] == output_name


def cleanup_stale(model_dir: Path) -> None:
    """Remove staging leftovers of an interrupted earlier run."""
    if model_dir.is_dir():
        for p in model_dir.iterdir():
            if p.name.startswith((".staging-", ".model.toml.")) or ".old-" in p.name:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def report(summary: dict[str, Any], seconds: float | None = None) -> None:
    line = (
        f"[{summary['model']} v{summary['version']}] {summary['runtime']}: "
        f"holdout accuracy {summary['holdout_accuracy']:.4f} "
        f"(n={summary['holdout_size']}), artifact {summary['artifact_bytes']:,} bytes"
    )
    if seconds is not None:
        line += f", {seconds:.1f}s"
    print(line, flush=True)
    for k, v in summary["signature"].items():
        print(f"    {k}: {v}", flush=True)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False

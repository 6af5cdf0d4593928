"""Offline optimization: a Keras model or a SavedModel version becomes a smaller, faster TFLite
version, or nothing at all.

``optimize`` converts the source for inference (training-only ops gone, batch norm folded),
quantizes it (float16, dynamic range or full int8), checks that no training-only op remains,
measures source and result on the model's declared holdout set, refuses a result that loses
more accuracy than allowed, and only then publishes a new version directory in one rename, its
manifest recording where it came from and what was measured.

It is a plain function with a progress callback so that the CLI and a background job can call
it alike; it never touches traffic (a canary is the caller's decision). TensorFlow is imported
only when it runs.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from serving.errors import (
    AccuracyGateFailed,
    ConversionFailed,
    InvalidInput,
    ManifestError,
    ModelNotFound,
    TrainingOpsRemain,
    UnsupportedSource,
    VersionNotFound,
)
from serving.manifest import (
    MANIFEST_FILE,
    ModelDefaults,
    VersionSpec,
    load_model_defaults,
    load_version,
    version_dirs,
)
from serving.optimize import evaldata, graph
from serving.optimize.convert import (
    KERAS_SUFFIXES,
    MODES,
    export_keras,
    load_keras,
    signature_inputs,
    to_tflite,
)
from serving.optimize.measure import Measurement, artifact_sha256, machine, measure
from serving.optimize.publish import check_model_name, publish, staging
from serving.runtimes import match_names
from serving.tomlwrite import dumps_toml

__all__ = ["MODES", "Measurement", "OptimizeResult", "Progress", "optimize"]

# stage description, fraction done in [0, 1]
Progress = Callable[[str, float], None]

ARTIFACT = "model.tflite"
# Provenance a source measured about itself; the result measures its own.
_MEASURED = {"holdout_accuracy", "holdout_size", "artifact_bytes", "framework"}
# What a source manifest passes on unchanged: the signature and the pipeline around it.
_CARRIED = ("max_batch_size", "inputs", "outputs", "preprocess", "postprocess", "batching")


@dataclass(frozen=True)
class OptimizeResult:
    """A published version and the figures its manifest records."""

    model: str
    version: int
    path: Path
    mode: str
    derived_from: str
    source: Measurement
    result: Measurement
    ops: graph.OpsReport
    created: datetime
    max_accuracy_drop: float
    holdout: str

    @property
    def accuracy_drop(self) -> float:
        return self.source.accuracy - self.result.accuracy


@dataclass(frozen=True)
class _Source:
    spec: VersionSpec  # a SavedModel, as the server would load it
    manifest: dict[str, Any]  # the template for the result's manifest
    derived_from: str
    # The source graph's nodes; None until read (a version's graph is read only once the
    # cheap checks have passed).
    nodes: list[tuple[str, str]] | None
    layers: list[str]


def _read_manifest(version_dir: Path) -> dict[str, Any]:
    with (version_dir / MANIFEST_FILE).open("rb") as fh:
        return tomllib.load(fh)


def _newest_template(model: str, model_dir: Path, defaults: ModelDefaults) -> dict[str, Any]:
    """The manifest of the newest valid version: its signature and pipeline are reused."""
    for _number, path in sorted(version_dirs(model_dir).items(), reverse=True):
        try:
            load_version(model, path, defaults)
        except ManifestError:
            continue
        return _read_manifest(path)
    raise UnsupportedSource(
        f"model '{model}' has no version to take the signature and pre-processing from; "
        "import one first (flask models import)"
    )


def _version_source(model: str, model_dir: Path, number: int, defaults: ModelDefaults) -> _Source:
    path = version_dirs(model_dir).get(number)
    if path is None:
        raise VersionNotFound(f"model '{model}' has no version {number}")
    spec = load_version(model, path, defaults)
    if spec.runtime != "savedmodel":
        raise UnsupportedSource(
            f"{model} version {number} is {spec.runtime}; optimize from a Keras model file or "
            "a SavedModel version (its training source)"
        )
    return _Source(
        spec=spec,
        manifest=_read_manifest(path),
        derived_from=f"{model}/{number}",
        nodes=None,
        layers=[],
    )


def _file_source(
    model: str, model_dir: Path, path: Path, defaults: ModelDefaults, stage: Path
) -> _Source:
    """A Keras file or a SavedModel directory outside the repository, staged as a SavedModel
    version with the newest version's signature and pipeline."""
    template = _newest_template(model, model_dir, defaults)
    version_dir = stage / "source" / "1"
    version_dir.mkdir(parents=True)
    layers: list[str] = []
    if path.is_file() and path.suffix.lower() in KERAS_SUFFIXES:
        keras_model = load_keras(path)
        layers = graph.keras_training_layers(keras_model)
        nodes = graph.keras_training_nodes(keras_model)
        export_keras(keras_model, version_dir / "saved_model")
    elif path.is_dir() and (path / "saved_model.pb").exists():
        shutil.copytree(path, version_dir / "saved_model")
        nodes = graph.savedmodel_nodes(version_dir / "saved_model")
    else:
        raise UnsupportedSource(
            f"'{path.name}' is neither a Keras file ({', '.join(KERAS_SUFFIXES)}) nor a "
            "SavedModel directory"
        )
    manifest = {
        "runtime": "savedmodel",
        "artifact": "saved_model",
        **{k: template[k] for k in _CARRIED if k in template},
    }
    (version_dir / MANIFEST_FILE).write_text(dumps_toml(manifest), encoding="utf-8")
    return _Source(
        spec=load_version(model, version_dir, defaults),
        manifest={**manifest, "provenance": {"source_file": path.name}},
        derived_from=f"{path.name} (sha256 {artifact_sha256(path)[:16]})",
        nodes=nodes,
        layers=layers,
    )


def _framework() -> str:
    import tensorflow as tf

    return f"tensorflow {tf.__version__}, ai-edge-litert {package_version('ai-edge-litert')}"


def _provenance(
    source: _Source,
    mode: str,
    created: datetime,
    measured: tuple[Measurement, Measurement],
    ops: graph.OpsReport,
    max_drop: float,
    holdout: str,
    calibration: str | None,
) -> dict[str, Any]:
    before, after = measured
    facts: dict[str, Any] = {
        "derived_from": source.derived_from,
        "optimized_by": "serving.optimize (flask models optimize)",
        "mode": mode,
        "created": created.isoformat(timespec="seconds"),
        "artifact_bytes": after.artifact_bytes,
        "holdout_accuracy": round(after.accuracy, 6),
        "holdout_size": after.holdout_size,
        "holdout": holdout,
        "source_holdout_accuracy": round(before.accuracy, 6),
        "max_accuracy_drop": max_drop,
        "latency_single_ms": round(after.latency_single_ms, 4),
        "latency_batch_ms": round(after.latency_batch_ms, 4),
        "latency_batch_size": after.batch_size,
        "source_artifact_bytes": before.artifact_bytes,
        "source_latency_single_ms": round(before.latency_single_ms, 4),
        "source_latency_batch_ms": round(before.latency_batch_ms, 4),
        "measured_on": machine(),
    }
    if calibration is not None:
        facts["calibration"] = calibration
    facts.update(
        ops_removed=list(ops.removed),
        training_ops_remaining=list(ops.remaining),
        served_ops=ops.served_lines(),
        framework=_framework(),
    )
    carried = source.manifest.get("provenance", {})
    facts.update({k: v for k, v in carried.items() if k not in _MEASURED and k not in facts})
    return facts


def optimize(
    root: Path,
    model: str,
    source: int | Path,
    mode: str,
    *,
    max_accuracy_drop: float = 0.01,
    progress: Progress | None = None,
) -> OptimizeResult:
    """Derive a TFLite version of ``model`` from ``source`` in ``mode`` and publish it.

    ``source`` is a version number (a SavedModel version) or the path of a Keras file or a
    SavedModel directory. ``max_accuracy_drop`` is a fraction (0.01 = one percentage point).

    Raises ModelNotFound, VersionNotFound, UnsupportedSource, EvaluationDataError (no declared
    holdout, or no calibration samples for int8), ConversionFailed, TrainingOpsRemain, or
    AccuracyGateFailed; in every one of those cases nothing is written.
    """
    step = progress or (lambda _stage, _done: None)
    check_model_name(model)
    model_dir = root / model
    if not model_dir.is_dir():
        raise ModelNotFound(f"model '{model}' does not exist", details={"model": model})
    if mode not in MODES:
        raise InvalidInput(f"unknown mode '{mode}' (known: {', '.join(MODES)})")
    if not 0 <= max_accuracy_drop <= 1:
        raise InvalidInput("max_accuracy_drop is a fraction between 0 and 1")
    defaults = load_model_defaults(model_dir)
    with staging(root, "optimize") as stage:
        step("reading the source", 0.0)
        if isinstance(source, int):
            src = _version_source(model, model_dir, source, defaults)
        else:
            src = _file_source(model, model_dir, Path(source), defaults, stage)
        holdout = evaldata.load(model_dir, "holdout", src.spec.inputs)
        calibration = None
        names = None
        if mode == "int8":
            calibration = evaldata.load(model_dir, "calibration", src.spec.inputs)
            try:
                names = match_names(src.spec.inputs, signature_inputs(src.spec.artifact), "inputs")
            except ValueError as err:
                raise ConversionFailed(str(err)) from err

        step(f"converting to TFLite ({mode})", 0.15)
        nodes = src.nodes if src.nodes is not None else graph.savedmodel_nodes(src.spec.artifact)
        data = to_tflite(src.spec.artifact, mode, calibration, names)
        ops = graph.report(nodes, data, src.layers)
        if ops.remaining:
            raise TrainingOpsRemain(
                "training-only ops remain in the converted graph: " + ", ".join(ops.remaining),
                details={"remaining": list(ops.remaining)},
            )
        candidate = stage / "1"
        candidate.mkdir()
        (candidate / ARTIFACT).write_bytes(data)
        manifest = {
            "runtime": "tflite",
            "artifact": ARTIFACT,
            **{k: src.manifest[k] for k in _CARRIED if k in src.manifest},
        }
        (candidate / MANIFEST_FILE).write_text(dumps_toml(manifest), encoding="utf-8")
        result_spec = load_version(model, candidate, defaults)

        step("measuring the source", 0.3)
        before = measure(src.spec, holdout)
        step("measuring the result", 0.6)
        after = measure(result_spec, holdout)
        drop = before.accuracy - after.accuracy
        if round(drop, 9) > max_accuracy_drop:
            raise AccuracyGateFailed(
                f"the {mode} version loses {drop * 100:.2f} percentage points of holdout "
                f"accuracy ({before.accuracy:.2%} -> {after.accuracy:.2%} on "
                f"{after.holdout_size} items of {holdout.origin}); the limit is "
                f"{max_accuracy_drop * 100:.2f}. Nothing was written.",
                details={
                    "source_accuracy": before.accuracy,
                    "result_accuracy": after.accuracy,
                    "max_accuracy_drop": max_accuracy_drop,
                },
            )

        step("publishing", 0.95)
        created = datetime.now(UTC)
        manifest["provenance"] = _provenance(
            src,
            mode,
            created,
            (before, after),
            ops,
            max_accuracy_drop,
            holdout.origin,
            f"{calibration.origin} ({len(calibration)} samples)" if calibration else None,
        )
        (candidate / MANIFEST_FILE).write_text(dumps_toml(manifest), encoding="utf-8")
        load_version(model, candidate, defaults)
        number = publish(candidate, model_dir)
    step("done", 1.0)
    return OptimizeResult(
        model=model,
        version=number,
        path=model_dir / str(number),
        mode=mode,
        derived_from=src.derived_from,
        source=before,
        result=after,
        ops=ops,
        created=created,
        max_accuracy_drop=max_accuracy_drop,
        holdout=holdout.origin,
    )

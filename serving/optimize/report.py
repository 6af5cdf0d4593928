"""Every version of a model side by side: format, size, latency, accuracy, lineage."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.errors import ManifestError, ModelNotFound, ServingError
from serving.manifest import TensorSpec, load_model_defaults, load_version, version_dirs
from serving.optimize import evaldata
from serving.optimize.measure import artifact_bytes, measure
from serving.optimize.publish import check_model_name


@dataclass(frozen=True)
class VersionRow:
    """One version. Figures are from its manifest unless ``measured`` (then from this
    machine, now); None where neither says. Sizes in bytes, latencies in milliseconds."""

    version: int
    format: str
    artifact_bytes: int | None = None
    latency_single_ms: float | None = None
    latency_batch_ms: float | None = None
    accuracy: float | None = None
    holdout_size: int | None = None
    derived_from: str | None = None
    measured: bool = False
    problem: str | None = None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def version_report(
    root: Path,
    model: str,
    *,
    measure_now: bool = False,
    progress: Callable[[str, float], None] | None = None,
) -> list[VersionRow]:
    """Rows for every version directory of ``model``, oldest first.

    With ``measure_now`` each version is loaded and measured on the model's declared holdout
    set (raises EvaluationDataError when it declares none). A version whose manifest is broken,
    that fails to load, or whose manifest misstates its size gets a row with its ``problem``.
    """
    check_model_name(model)
    model_dir = root / model
    if not model_dir.is_dir():
        raise ModelNotFound(f"model '{model}' does not exist", details={"model": model})
    defaults = load_model_defaults(model_dir)
    versions = sorted(version_dirs(model_dir).items())
    rows = []
    holdouts: dict[tuple[TensorSpec, ...], evaldata.EvalSet] = {}
    for i, (number, path) in enumerate(versions):
        if progress is not None:
            progress(f"version {number}", i / max(len(versions), 1))
        try:
            spec = load_version(model, path, defaults)
        except ManifestError as err:
            rows.append(VersionRow(number, "?", problem=err.message))
            continue
        facts = spec.provenance
        mode = facts.get("mode")
        kind = f"{spec.runtime} {mode}" if isinstance(mode, str) else spec.runtime
        size = _number(facts.get("artifact_bytes"))
        derived = facts.get("derived_from")
        row = VersionRow(
            version=number,
            format=kind,
            artifact_bytes=artifact_bytes(spec.artifact),
            latency_single_ms=_number(facts.get("latency_single_ms")),
            latency_batch_ms=_number(facts.get("latency_batch_ms")),
            accuracy=_number(facts.get("holdout_accuracy")),
            holdout_size=int(facts["holdout_size"]) if "holdout_size" in facts else None,
            derived_from=str(derived) if derived is not None else None,
            problem=(
                f"manifest says {int(size)} bytes"
                if size is not None and int(size) != artifact_bytes(spec.artifact)
                else None
            ),
        )
        if measure_now:
            if spec.inputs not in holdouts:
                holdouts[spec.inputs] = evaldata.load(model_dir, "holdout", spec.inputs)
            try:
                now = measure(spec, holdouts[spec.inputs])
            except ServingError as err:
                rows.append(dataclasses.replace(row, problem=err.message))
                continue
            row = dataclasses.replace(
                row,
                artifact_bytes=now.artifact_bytes,
                latency_single_ms=now.latency_single_ms,
                latency_batch_ms=now.latency_batch_ms,
                accuracy=now.accuracy,
                holdout_size=now.holdout_size,
                measured=True,
            )
        rows.append(row)
    return rows

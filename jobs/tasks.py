"""Background tasks other than batch predictions: for now, optimizing a version.

A task is a function of the job, its parameters and a progress callback that returns what to
record as the job's result. It runs on the job runner's thread, so it is niced, survives the
submitting request and, should its process die, is started again elsewhere once its lease runs
out (an optimization writes nothing until its final rename, so a rerun is safe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployments import store as deployments
from jobs.models import Job
from serving import routing
from serving.errors import ServingError
from serving.optimize import optimize
from serving.registry import VersionState
from serving.service import InferenceService

Progress = Callable[[str, float], None]
Task = Callable[[Job, dict[str, Any], Progress], dict[str, Any]]


def optimize_task(service: InferenceService) -> Task:
    def run(job: Job, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        root = Path(service.settings.model_root)
        result = optimize(
            root,
            job.model,
            int(params["from_version"]),
            str(params["mode"]),
            max_accuracy_drop=float(params["max_accuracy_drop"]),
            progress=progress,
        )
        # Loaded, warmed up and self-tested here now; the other processes' watchers follow.
        service.rescan()
        summary: dict[str, Any] = {
            "version": result.version,
            "mode": result.mode,
            "derived_from": result.derived_from,
            "accuracy_drop": round(result.accuracy_drop, 6),
            "max_accuracy_drop": result.max_accuracy_drop,
            "source": dataclasses.asdict(result.source),
            "result": dataclasses.asdict(result.result),
            "ops_removed": list(result.ops.removed),
            "ops_remaining": list(result.ops.remaining),
        }
        percent = params.get("canary_percent")
        if percent is not None:
            progress("starting the canary", 0.99)  # raises if the job was cancelled meanwhile
            summary["canary"] = _start_canary(service, root, job, result.version, float(percent))
        return summary

    return run


def _start_canary(
    service: InferenceService, root: Path, job: Job, version: int, percent: float
) -> dict[str, Any]:
    """Give the published version its share. It exists whatever happens here, so a refusal is
    reported beside it rather than failing the job (which would hide the new version)."""
    found = service.model(job.model).versions.get(version)
    if found is None or found.state is not VersionState.READY:
        reason = "not loaded" if found is None else f"{found.state}: {found.reason}"
        return {"percent": percent, "error": f"version {version} is not READY here ({reason})"}
    try:
        deployments.seed(root / "routing.toml", {job.model})
        policy = deployments.change(
            job.model,
            "canary",
            f"job:{job.id[:8]} ({job.owner})",
            lambda before: routing.canary(before, version, percent),
        )
    except ServingError as err:
        return {"percent": percent, "error": err.message}
    return {"percent": percent, "revision": policy.revision}

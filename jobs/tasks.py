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
from serving.optimize import optimize
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
            deployments.seed(root / "routing.toml", {job.model})
            policy = deployments.change(
                job.model,
                "canary",
                f"job:{job.id[:8]} ({job.owner})",
                lambda before: routing.canary(before, result.version, float(percent)),
            )
            summary["canary"] = {"percent": percent, "revision": policy.revision}
        return summary

    return run

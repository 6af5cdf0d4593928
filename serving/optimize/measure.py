"""Measure a version as the server runs it: its runtime, one inference thread.

Accuracy is the argmax of the post-processed output against the holdout labels; latency is the
median wall time of the runtime's ``predict`` (set inputs, invoke, read outputs) for one item
and for a full batch of ``max_batch_size`` items.
"""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.manifest import VersionSpec
from serving.optimize.evaldata import EvalSet
from serving.runtimes import Runtime, default_factories
from serving.settings import ServingSettings

SINGLE_RUNS = 300
BATCH_RUNS = 60
# A microsecond model finishes its runs within a millisecond, where one scheduler hiccup moves
# the median: keep calling for at least this long.
MIN_SECONDS = 0.2
# Each latency stops early after this long (but after at least MIN_RUNS), so a slow model
# does not hold the command for minutes.
BUDGET_SECONDS = 3.0
MIN_RUNS = 15
WARM_UP_RUNS = 5


@dataclass(frozen=True)
class Measurement:
    """One version on this machine: sizes in bytes, latencies in milliseconds."""

    artifact_bytes: int
    accuracy: float
    holdout_size: int
    latency_single_ms: float
    latency_batch_ms: float
    batch_size: int


def artifact_bytes(path: Path) -> int:
    """Size of a file, or of every file under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def artifact_sha256(path: Path) -> str:
    """SHA-256 of a file, or of every file under a directory in path order."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def machine() -> str:
    """Where the latencies were measured, for the manifest."""
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, 1 inference thread"


def open_runtime(spec: VersionSpec) -> Runtime:
    """Load ``spec`` with the runtime and settings the server uses by default."""
    factory = default_factories()[spec.runtime]
    runtime = factory(spec, ServingSettings(model_root=spec.path.parent))
    runtime.load()
    return runtime


def predicted_classes(scores: np.ndarray) -> np.ndarray:
    """Class index per row: argmax, or for a single score column, above zero (a logit)."""
    rows = scores.reshape(scores.shape[0], -1)
    if rows.shape[1] == 1:
        return (rows[:, 0] > 0).astype(np.int64)
    classes: np.ndarray = np.argmax(rows, axis=1)
    return classes


def accuracy(runtime: Runtime, spec: VersionSpec, holdout: EvalSet) -> float:
    """Share of holdout rows whose predicted class is the label."""
    output = spec.postprocess.output if spec.postprocess else spec.outputs[0].name
    assert holdout.labels is not None  # evaldata.load requires labels for a holdout
    correct = 0
    for start in range(0, len(holdout), spec.max_batch_size):
        stop = min(start + spec.max_batch_size, len(holdout))
        scores = runtime.predict(holdout.rows(start, stop))[output]
        correct += int(np.sum(predicted_classes(scores) == holdout.labels[start:stop]))
    return correct / len(holdout)


def median_ms(call: Callable[[], object], runs: int) -> float:
    """Median wall time of ``call`` in milliseconds, after a warm-up: at least ``runs`` calls
    and MIN_SECONDS, at most BUDGET_SECONDS (but MIN_RUNS calls)."""
    for _ in range(WARM_UP_RUNS):
        call()
    times: list[float] = []
    begun = time.perf_counter()
    while True:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
        elapsed = started - begun
        if len(times) >= MIN_RUNS and elapsed >= BUDGET_SECONDS:
            break
        if len(times) >= runs and elapsed >= MIN_SECONDS:
            break
    return statistics.median(times) * 1000


def latency(
    runtime: Runtime, sample: Mapping[str, np.ndarray], batch_size: int
) -> tuple[float, float]:
    """(single-item, batch of ``batch_size``) median latency in ms; ``sample`` holds at least
    one row, repeated if it has fewer than ``batch_size``."""
    single = {k: np.ascontiguousarray(v[:1]) for k, v in sample.items()}
    batch = {
        k: np.ascontiguousarray(np.resize(v, (batch_size, *v.shape[1:])).astype(v.dtype))
        for k, v in sample.items()
    }
    single_ms = median_ms(lambda: runtime.predict(single), SINGLE_RUNS)
    batch_ms = median_ms(lambda: runtime.predict(batch), BATCH_RUNS)
    return single_ms, batch_ms


def measure(spec: VersionSpec, holdout: EvalSet) -> Measurement:
    """Load ``spec`` as the server would and measure size, holdout accuracy and latency."""
    runtime = open_runtime(spec)
    try:
        correct = accuracy(runtime, spec, holdout)
        single_ms, batch_ms = latency(
            runtime, holdout.rows(0, spec.max_batch_size), spec.max_batch_size
        )
    finally:
        runtime.unload()
    return Measurement(
        artifact_bytes=artifact_bytes(spec.artifact),
        accuracy=correct,
        holdout_size=len(holdout),
        latency_single_ms=single_ms,
        latency_batch_ms=batch_ms,
        batch_size=spec.max_batch_size,
    )

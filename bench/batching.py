"""Server-side dynamic batching, off against on, for every bundled model version.

From the repository root::

    .venv/bin/python bench/batching.py                   # full run, about 12 minutes
    .venv/bin/python bench/batching.py --seconds 0.5 --models iris --clients 1,8   # smoke check

One run, in this order:

1. raw: the selected versions loaded in this process, ``runtime.predict`` called in a loop at
   batch 1, 8 and 32 (throughput.measure_raw). The best of the three is the version's raw
   limit: what one core gets out of the runtime with no server around it.
2. server: the selected models copied to a temp directory, where every version is served as
   itself without a ``[batching]`` table (batching off) and, for each ``--delays`` value d, as
   a copy numbered ``100 * i + v`` with ``[batching] max_batch_delay_ms = d`` (on). One real
   gunicorn server (gunicorn.conf.py) serves them all, so the off and on sides of a pair run
   back to back on the same server: ``--seconds`` per side, cut into ``--slices`` windows
   interleaved off-on-on-off, so that drift and a neighbour's bursts on the shared machine
   fall on both sides alike.

   a. sweep: binary tensors at 1 client and at the largest ``--clients`` value up to 32, off
      and at every delay, and once off against off (A/A: how large a difference noise makes).
      Of the delays whose 1-client p50 is at most 1 ms above off's, the chosen one has the
      lowest on/off server CPU per item at the higher concurrency (a smaller delay within 0.05
      of it wins): when the server is CPU-bound that is the highest throughput, and it is
      steadier than items/s when other jobs share the machine. When the raw figures say
      batching cannot save even 5% of the server's CPU per item (the runtime's share of a
      request is too small), the smallest delay is chosen: the sweep cannot see such a gain.
   b. grid: every encoding at every ``--clients`` value, off and on at the chosen delay. The
      encodings: a v2 JSON tensor, a v2 binary tensor (``Inference-Header-Content-Length``),
      and on the own predict route a multipart PNG upload (image models) or JSON named
      features (tabular models), so decoding and pre-processing are included.

Mean batch size and queue time of an on cell come from ``GET /v2/models/<m>/stats``, read from
every gunicorn worker (their batchers are separate) before and after the cell; they include
the cell's warm-up. The load generator shares the machine's CPUs with the server (see
throughput.py), so read ratios measured in the same run, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # Run as a script (python bench/batching.py) only bench/ itself is on the path.
    sys.path.insert(0, str(REPO_ROOT))

from bench import credentials, inputs, throughput  # noqa: E402
from bench.loadgen import (  # noqa: E402
    HOST,
    GunicornServer,
    LoadResult,
    Request,
    free_port,
    percentiles_ms,
    post_once,
    run_load,
)
from bench.throughput import Target, _ms, _rate, _ratio, format_table  # noqa: E402

RAW_BATCH_SIZES = (1, 8, 32)
COPY_STRIDE = 100  # the on copy for the i-th delay of version v is numbered COPY_STRIDE * i + v
BODIES_PER_ENCODING = 8
SWEEP_MAX_CLIENTS = 32
# A smaller delay within 5% of the best CPU ratio is preferred: on a shared machine an A/A
# pair (off against off) differs by about that much.
SWEEP_TIE = 0.05
# The targets.
TARGET_CLIENTS = 32
SAVEDMODEL_MIN_SPEEDUP = 1.5
TFLITE_MIN_RATIO = 0.95
LONE_CLIENT_P50_BUDGET_MS = 1.0
# What the suggestion asks of batching before it recommends turning it on: 3% less server CPU
# per item (throughput when CPU-bound), steadier on a shared machine than items/s.
SUGGEST_MIN_GAIN = 1.03


@dataclass
class BatchFigures:
    """What the batchers of one served version did during one cell, summed over workers."""

    batches: int = 0
    requests: int = 0
    items: int = 0
    mean_batch_size: float | None = None
    mean_queue_ms: float | None = None
    workers_read: int = 0
    workers: int = 0
    queue_seconds: float = 0.0

    def add(self, other: BatchFigures) -> None:
        """Adds another window's figures (the same workers): sums, then the means again."""
        self.batches += other.batches
        self.requests += other.requests
        self.items += other.items
        self.queue_seconds += other.queue_seconds
        self.workers_read = min(self.workers_read or other.workers_read, other.workers_read)
        self.mean_batch_size = self.items / self.batches if self.batches else None
        self.mean_queue_ms = 1000 * self.queue_seconds / self.requests if self.requests else None


@dataclass
class Cell:
    """One encoding at one concurrency: batching off, and on at ``delay_ms``."""

    model: str
    version: int
    runtime: str
    encoding: str
    clients: int
    delay_ms: float | None
    off: LoadResult | None = None
    on: LoadResult | None = None
    batching: BatchFigures | None = None
    on_over_off: float | None = None
    on_over_raw: float | None = None
    # Server (gunicorn workers') CPU per answered item, ms: less sensitive than items/s to
    # what else runs on the machine.
    off_cpu_ms: float | None = None
    on_cpu_ms: float | None = None


@dataclass
class VersionReport:
    model: str
    version: int
    runtime: str
    raw_best_items_per_second: float | None = None
    raw_best_batch: int | None = None
    chosen_delay_ms: float | None = None
    # What batching can save at most: the runtime's ms/item at batch 1 minus at the best batch.
    raw_saving_ms: float | None = None
    # The on/off throughput that saving allows while the server is CPU-bound.
    cpu_ceiling: float | None = None
    sweep: list[Cell] = field(default_factory=list)
    grid: list[Cell] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    suggestion: str = ""


# -- the model repository copy ---------------------------------------------------------------

_BATCHING_TABLE = re.compile(r"^\[batching\][^\n]*\n(?:(?!\[)[^\n]*\n?)*", re.MULTILINE)


def set_batching(manifest: Path, delay_ms: float | None, queue_size: int) -> None:
    """Rewrite ``manifest`` without its ``[batching]`` table, then with one at ``delay_ms``
    unless that is None. Raises SystemExit if batching is declared some other way."""
    text = _BATCHING_TABLE.sub("", manifest.read_text())
    if "batching" in tomllib.loads(text):
        raise SystemExit(f"{manifest}: declares batching other than as a [batching] table")
    if delay_ms is not None:
        text = (
            text.rstrip("\n") + f"\n\n[batching]\nmax_batch_delay_ms = {delay_ms:g}\n"
            f"max_queue_size = {queue_size}\n"
        )
        parsed = tomllib.loads(text)["batching"]
        assert parsed == {"max_batch_delay_ms": delay_ms, "max_queue_size": queue_size}, parsed
    manifest.write_text(text)


def copy_models(source: Path, dest: Path, models: Sequence[str] | None) -> None:
    """The wanted models (all when None) and routing.toml, every version with batching off."""
    dest.mkdir(parents=True)
    if (source / "routing.toml").exists():
        shutil.copy2(source / "routing.toml", dest / "routing.toml")
    for model_dir in sorted(p for p in source.iterdir() if (p / "model.toml").exists()):
        if models is None or model_dir.name in models:
            shutil.copytree(model_dir, dest / model_dir.name)
            for manifest in (dest / model_dir.name).glob("*/manifest.toml"):
                set_batching(manifest, None, 1)


def add_batched_copies(
    root: Path, targets: Sequence[Target], delays: Sequence[float], queue_size: int
) -> int:
    """Next to every target version, one copy per delay with batching on; returns how many
    versions the root now holds."""
    for target in targets:
        original = root / target.model / str(target.version)
        for i, delay in enumerate(delays, start=1):
            copy = root / target.model / str(served_version(target.version, i))
            shutil.copytree(original, copy)
            set_batching(copy / "manifest.toml", delay, queue_size)
    return len(list(root.glob("*/*/manifest.toml")))


def served_version(version: int, delay_index: int) -> int:
    """The version number the server knows: the original for off (``delay_index`` 0)."""
    return COPY_STRIDE * delay_index + version


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Encoding:
    name: str
    path: Callable[[int], str]  # served version -> route
    requests: list[Request]


def encodings(target: Target, rng: np.random.Generator) -> list[Encoding]:
    """The three ways a client sends one item, each with a few bodies to cycle through."""
    base = f"/{target.model}/versions"
    json_bodies: list[Request] = [
        (inputs.infer_body(target.spec, rng), "application/json")
        for _ in range(BODIES_PER_ENCODING)
    ]
    binary_bodies: list[Request] = []
    for _ in range(BODIES_PER_ENCODING):
        body, headers = inputs.infer_body_binary(target.spec, rng)
        binary_bodies.append((body, "application/octet-stream", headers))
    found = [
        Encoding("json", lambda v: f"/v2/models{base}/{v}/infer", json_bodies),
        Encoding("binary", lambda v: f"/v2/models{base}/{v}/infer", binary_bodies),
    ]
    samples = inputs.predict_samples(target.spec)
    if samples:
        name = "multipart" if inputs.predict_kind(target.spec) == "image" else "features"
        found.append(
            Encoding(
                name,
                lambda v: f"/api/models{base}/{v}/predict",
                [(s.body, s.content_type) for s in samples],
            )
        )
    return found


def _counters(
    server: GunicornServer, model: str, headers: Mapping[str, str]
) -> dict[int, dict[str, dict[str, float]]]:
    """{worker pid: {served version: batches, requests, items, queue seconds}} of one model."""
    found: dict[int, dict[str, dict[str, float]]] = {}
    for pid, (status, body) in server.get_from_each_worker(
        f"/v2/models/{model}/stats", headers
    ).items():
        if status != 200:
            continue
        per_version: dict[str, dict[str, float]] = {}
        for entry in json.loads(body)["versions"]:
            stats = entry.get("stats")
            if stats:
                per_version[entry["version"]] = {
                    "batches": stats["batches"],
                    "requests": stats["requests"],
                    "items": stats["items"],
                    "queue_seconds": (stats["mean_queue_ms"] or 0) * stats["requests"] / 1000,
                }
        found[pid] = per_version
    return found


def batch_figures(
    before: Mapping[int, Mapping[str, Mapping[str, float]]],
    after: Mapping[int, Mapping[str, Mapping[str, float]]],
    served: int,
    workers: int,
) -> BatchFigures:
    """What happened between two ``_counters`` readings, over the workers read both times."""
    figures = BatchFigures(workers=workers)
    zero = {"batches": 0, "requests": 0, "items": 0, "queue_seconds": 0.0}
    for pid in before.keys() & after.keys():
        start = before[pid].get(str(served), zero)
        end = after[pid].get(str(served), zero)
        figures.workers_read += 1
        figures.batches += int(end["batches"] - start["batches"])
        figures.requests += int(end["requests"] - start["requests"])
        figures.items += int(end["items"] - start["items"])
        figures.queue_seconds += end["queue_seconds"] - start["queue_seconds"]
    if figures.batches:
        figures.mean_batch_size = figures.items / figures.batches
    if figures.requests:
        figures.mean_queue_ms = 1000 * figures.queue_seconds / figures.requests
    return figures


def pool(loads: Sequence[LoadResult], latencies: Sequence[float]) -> LoadResult:
    """Several measured windows of one side of a pair as one: rates over the summed time,
    percentiles over every latency, CPU figures weighted by each window's length."""
    seconds = sum(load.seconds for load in loads)
    pooled = LoadResult(clients=loads[0].clients, seconds=seconds)
    pooled.requests = sum(load.requests for load in loads)
    pooled.items_per_second = pooled.requests / seconds
    pooled.p50_ms, pooled.p99_ms = percentiles_ms(latencies)
    kinds: Counter[str] = Counter()
    for load in loads:
        kinds.update(load.error_kinds)
    pooled.errors = sum(load.errors for load in loads)
    pooled.warmup_errors = sum(load.warmup_errors for load in loads)
    pooled.error_kinds = dict(kinds)
    pooled.error_sample = next((load.error_sample for load in loads if load.error_sample), "")
    pooled.note = "; ".join(sorted({load.note for load in loads if load.note}))

    def weighted(name: str) -> float | None:
        values = [(getattr(load, name), load.seconds) for load in loads]
        if any(v is None for v, _ in values):
            return None
        return sum(v * t for v, t in values) / seconds

    pooled.server_cpu_percent = weighted("server_cpu_percent")
    pooled.bench_cpu_percent = weighted("bench_cpu_percent")
    pooled.other_cpu_percent = weighted("other_cpu_percent")
    pooled.iowait_percent = weighted("iowait_percent")
    return pooled


@dataclass
class Session:
    """What every cell needs: the running server, the clients' headers, the settings."""

    server: GunicornServer
    headers: dict[str, str]
    seconds: float
    slices: int
    workers: int
    stop: threading.Event
    emit: Callable[[str], None]
    pairs: int = 0  # off/on pairs so far: their order alternates

    def load(
        self, path: str, requests: Sequence[Request], clients: int, latencies: list[float]
    ) -> LoadResult:
        seconds = self.seconds / self.slices
        return run_load(
            self.server,
            path,
            requests,
            self.headers,
            clients,
            seconds,
            throughput.server_warmup(seconds),
            self.stop,
            latencies,
        )

    def pair(
        self,
        target: Target,
        encoding: Encoding,
        clients: int,
        delay_index: int,
        delay_ms: float | None,
        raw_best: float | None,
    ) -> Cell:
        """Off and on for one encoding and concurrency: ``slices`` windows each, interleaved
        off-on-on-off-..., so drift and a neighbour's bursts fall on both sides alike."""
        cell = Cell(
            target.model,
            target.version,
            target.spec.runtime,
            encoding.name,
            clients,
            delay_ms,
        )
        served = served_version(target.version, delay_index)
        loads: dict[bool, list[LoadResult]] = {False: [], True: []}
        latencies: dict[bool, list[float]] = {False: [], True: []}
        batching = BatchFigures(workers=self.workers)
        for k in range(self.slices):
            for on in (False, True) if (self.pairs + k) % 2 == 0 else (True, False):
                path = encoding.path(served if on else target.version)
                before = _counters(self.server, target.model, self.headers) if on else {}
                loads[on].append(self.load(path, encoding.requests, clients, latencies[on]))
                if on:
                    after = _counters(self.server, target.model, self.headers)
                    batching.add(batch_figures(before, after, served, self.workers))
        self.pairs += 1
        cell.off, cell.on = pool(loads[False], latencies[False]), pool(loads[True], latencies[True])
        cell.batching = batching
        if cell.off.items_per_second and cell.on.items_per_second is not None:
            cell.on_over_off = cell.on.items_per_second / cell.off.items_per_second
        if raw_best and cell.on.items_per_second is not None:
            cell.on_over_raw = cell.on.items_per_second / raw_best
        cell.off_cpu_ms, cell.on_cpu_ms = cpu_ms_per_item(cell.off), cpu_ms_per_item(cell.on)
        self.emit(
            f"  {target.model} v{target.version} {encoding.name:9} x{clients:<3} "
            f"delay {_delay(delay_ms)}: off {_rate(cell.off.items_per_second)}, "
            f"on {_rate(cell.on.items_per_second)} items/s, batch "
            f"{_batch(cell.batching)}"
        )
        return cell


def cpu_ms_per_item(load: LoadResult) -> float | None:
    if load.server_cpu_percent is None or not load.requests:
        return None
    return 10 * load.server_cpu_percent * load.seconds / load.requests


def sweep_clients(clients: Sequence[int]) -> list[int]:
    high = max([c for c in clients if c <= SWEEP_MAX_CLIENTS] or [min(clients)])
    return sorted({1, high})


def choose_delay(sweep: Sequence[Cell], max_cpu_saving: float | None = None) -> float:
    """The delay to use for the grid (see the module docstring). ``max_cpu_saving`` is the
    largest share of the server's CPU per item that batching could save (from the raw
    figures); when it is below what the sweep can tell from noise, the smallest delay."""
    high = max(c.clients for c in sweep)
    lone = {c.delay_ms: c for c in sweep if c.clients == 1}
    loaded = {c.delay_ms: c for c in sweep if c.clients == high}

    def lone_ok(delay: float | None) -> bool:
        cell = lone.get(delay)
        if cell is None or cell.off is None or cell.on is None:
            return True
        if cell.off.p50_ms is None or cell.on.p50_ms is None:
            return False
        return cell.on.p50_ms - cell.off.p50_ms <= LONE_CLIENT_P50_BUDGET_MS

    def cpu(delay: float | None) -> float:
        """On over off CPU per item: the pair was measured in the same moments, so what the
        rest of the machine did weighs on both sides alike."""
        cell = loaded.get(delay)
        if cell is None or not cell.on_cpu_ms or not cell.off_cpu_ms:
            return math.inf
        return cell.on_cpu_ms / cell.off_cpu_ms

    delays = sorted(d for d in loaded if d is not None)
    candidates = [d for d in delays if lone_ok(d)] or delays[:1]
    if max_cpu_saving is not None and max_cpu_saving < SWEEP_TIE:
        return candidates[0]
    best = min(cpu(d) for d in candidates)
    return next(d for d in candidates if cpu(d) <= best + SWEEP_TIE)


# -- verdicts --------------------------------------------------------------------------------


def judge(report: VersionReport) -> None:
    """The issue's targets, and which ``[batching]`` setting the figures support."""
    cells = [c for c in report.grid if c.off and c.on]
    at_target = [c for c in cells if c.clients == TARGET_CLIENTS]
    lone = [c for c in cells if c.clients == 1]

    def ratios(chosen: Sequence[Cell]) -> str:
        shown = ", ".join(f"{c.encoding} x{c.clients} {_ratio(c.on_over_off)}" for c in chosen)
        return shown or "not measured"

    if report.runtime == "savedmodel":
        if at_target:
            met = all((c.on_over_off or 0) >= SAVEDMODEL_MIN_SPEEDUP for c in at_target)
            report.verdicts.append(
                f"on >= {SAVEDMODEL_MIN_SPEEDUP}x off at {TARGET_CLIENTS} clients: "
                f"{'MET' if met else 'NOT MET'} ({ratios(at_target)})"
            )
        else:
            report.verdicts.append(f"on/off at {TARGET_CLIENTS} clients: not measured")
    else:
        known = [c for c in cells if c.on_over_off is not None]
        if known:
            worst = min(known, key=lambda c: c.on_over_off or 0)
            met = (worst.on_over_off or 0) >= TFLITE_MIN_RATIO
            report.verdicts.append(
                f"on never below {TFLITE_MIN_RATIO}x off: {'MET' if met else 'NOT MET'} "
                f"(lowest {ratios([worst])}; {TARGET_CLIENTS} clients: {ratios(at_target)})"
            )
    aa = next((c for c in report.sweep if c.delay_ms is None), None)
    noise = None
    if aa and aa.off_cpu_ms and aa.on_cpu_ms:
        noise = abs(math.log(aa.on_cpu_ms / aa.off_cpu_ms))
        report.verdicts.append(
            f"noise: off against itself (binary x{aa.clients}) gave items/s "
            f"{_ratio(aa.on_over_off)}x and CPU per item {_ratio(aa.on_cpu_ms / aa.off_cpu_ms)}x"
        )
    busiest = max(cells, key=lambda c: (c.encoding == "binary", c.clients), default=None)
    if busiest and busiest.off_cpu_ms and report.raw_saving_ms is not None:
        ceiling = busiest.off_cpu_ms / max(busiest.off_cpu_ms - report.raw_saving_ms, 1e-9)
        report.cpu_ceiling = ceiling
        report.verdicts.append(
            f"CPU ceiling: unbatched the server spends {busiest.off_cpu_ms:.2f} ms CPU per item "
            f"({busiest.encoding} x{busiest.clients}); batching saves at most "
            f"{report.raw_saving_ms:.3f} ms of runtime per item (raw batch 1 vs "
            f"{report.raw_best_batch}), so while CPU-bound on/off <= {ceiling:.3f}"
        )
    deltas = [
        (c, c.on.p50_ms - c.off.p50_ms)
        for c in lone
        if c.on and c.off and c.on.p50_ms is not None and c.off.p50_ms is not None
    ]
    if deltas:
        met = all(d <= LONE_CLIENT_P50_BUDGET_MS for _, d in deltas)
        shown = ", ".join(f"{c.encoding} {d:+.2f} ms" for c, d in deltas)
        report.verdicts.append(
            f"1-client p50 on <= off + {LONE_CLIENT_P50_BUDGET_MS:g} ms: "
            f"{'MET' if met else 'NOT MET'} ({shown})"
        )
    else:
        report.verdicts.append("1-client p50: not measured")

    loaded = [c for c in cells if c.clients >= 8]
    rate_gain = _geomean([c.on_over_off for c in loaded])
    cpu_gain = _geomean(
        [c.off_cpu_ms / c.on_cpu_ms for c in loaded if c.off_cpu_ms and c.on_cpu_ms]
    )
    lone_ok = all(d <= LONE_CLIENT_P50_BUDGET_MS for _, d in deltas)
    figures = (
        f"at 8+ clients on/off items/s {_ratio(rate_gain)} and off/on CPU per item "
        f"{_ratio(cpu_gain)} (geometric means)"
    )
    if rate_gain is None or cpu_gain is None:
        report.suggestion = "not enough figures (no cell with 8 or more clients)"
    elif report.cpu_ceiling is not None and report.cpu_ceiling < SUGGEST_MIN_GAIN:
        report.suggestion = (
            f"no [batching] table: the runtime is too small a share of a request for batching "
            f"to gain even {SUGGEST_MIN_GAIN - 1:.0%} (ceiling {_ratio(report.cpu_ceiling)}); "
            f"measured {figures}"
        )
    elif noise is not None and math.log(cpu_gain) <= noise:
        report.suggestion = (
            f"no [batching] table: {figures}, no more than off against itself differs "
            f"(CPU per item {_ratio(math.exp(noise))}x)"
        )
    elif cpu_gain >= SUGGEST_MIN_GAIN and rate_gain >= 1 and lone_ok:
        report.suggestion = f"[batching] max_batch_delay_ms = {report.chosen_delay_ms:g}: {figures}"
    else:
        reason = "" if lone_ok else "; a lone client pays more than the budget"
        report.suggestion = f"no [batching] table: {figures}{reason}"


def _geomean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v]
    return math.exp(sum(map(math.log, known)) / len(known)) if known else None


# -- reporting -------------------------------------------------------------------------------


def _batch(figures: BatchFigures | None) -> str:
    if figures is None or figures.mean_batch_size is None:
        return "n/a"
    mark = "" if figures.workers_read == figures.workers else "*"
    return f"{figures.mean_batch_size:.2f}{mark}"


def _delay(value: float | None) -> str:
    return "off (A/A)" if value is None else f"{value:g}"


def _errors(*loads: LoadResult | None) -> str:
    return str(sum(load.errors for load in loads if load))


def _other(*loads: LoadResult | None) -> str:
    """The most CPU the rest of the machine used in either window (100% = one core)."""
    seen = [load.other_cpu_percent for load in loads if load and load.other_cpu_percent is not None]
    return throughput._percent(max(seen)) if seen else "n/a"


def _label(report: VersionReport | Cell) -> str:
    return f"{report.model} v{report.version} {report.runtime}"


def grid_table(reports: Sequence[VersionReport]) -> str:
    headers = ["version", "encoding", "clients", "off items/s", "off p50", "off p99"]
    headers += ["delay ms", "on items/s", "on p50", "on p99", "mean batch", "queue ms"]
    headers += ["on/off", "on/raw best", "off cpu", "on cpu", "other cpu", "errors"]
    rows = []
    for report in reports:
        for c in report.grid:
            off, on = c.off, c.on
            rows.append(
                [
                    _label(c),
                    c.encoding,
                    str(c.clients),
                    _rate(off.items_per_second if off else None),
                    _ms(off.p50_ms if off else None),
                    _ms(off.p99_ms if off else None),
                    _delay(c.delay_ms),
                    _rate(on.items_per_second if on else None),
                    _ms(on.p50_ms if on else None),
                    _ms(on.p99_ms if on else None),
                    _batch(c.batching),
                    _ms(c.batching.mean_queue_ms if c.batching else None),
                    _ratio(c.on_over_off),
                    _ratio(c.on_over_raw),
                    _ms(c.off_cpu_ms),
                    _ms(c.on_cpu_ms),
                    _other(off, on),
                    _errors(off, on),
                ]
            )
    return format_table(headers, rows)


def sweep_table(reports: Sequence[VersionReport]) -> str:
    headers = ["version", "clients", "delay ms", "off items/s", "off p50", "on items/s"]
    headers += ["on p50", "on p99", "mean batch", "queue ms", "on/off", "off cpu", "on cpu"]
    headers += ["other cpu", "chosen"]
    rows = []
    for report in reports:
        for c in report.sweep:
            off, on = c.off, c.on
            rows.append(
                [
                    _label(c),
                    str(c.clients),
                    _delay(c.delay_ms),
                    _rate(off.items_per_second if off else None),
                    _ms(off.p50_ms if off else None),
                    _rate(on.items_per_second if on else None),
                    _ms(on.p50_ms if on else None),
                    _ms(on.p99_ms if on else None),
                    _batch(c.batching),
                    _ms(c.batching.mean_queue_ms if c.batching else None),
                    _ratio(c.on_over_off),
                    _ms(c.off_cpu_ms),
                    _ms(c.on_cpu_ms),
                    _other(off, on),
                    "<-" if c.delay_ms == report.chosen_delay_ms else "",
                ]
            )
    return format_table(headers, rows)


LEGEND = """\
encodings    json: POST /v2/models/<m>/versions/<v>/infer with a JSON tensor of one random item;
             binary: the same route with the binary tensor extension (JSON header, then raw
             little-endian bytes; outputs as JSON); multipart: POST /api/models/<m>/versions/
             <v>/predict with one PNG upload; features: the same route with one JSON instance
             of named features (tabular models), decoding and pre-processing included
off / on     the version without / with a [batching] table (max_batch_delay_ms = delay ms),
             same server, measured back to back
mean batch   items per runtime call in the on cell, from /v2/models/<m>/stats of every worker,
             warm-up included (* = not every worker could be read); queue ms: mean time a
             request waited in the batcher's queue
on/raw best  on items/s over the raw in-process items/s at the best batch size (one core,
             no server)
off/on cpu   CPU the gunicorn workers used per answered item, ms (steadier than items/s when
             the machine is shared); other cpu: the most CPU anything else on the machine used
             during the off or the on window (100% = one core): well above 0%, that pair was
             measured against someone else's job"""


def report_text(
    facts: Mapping[str, Any],
    args: argparse.Namespace,
    raw_results: Sequence[throughput.RawResult],
    reports: Sequence[VersionReport],
    notes: Sequence[str],
) -> str:
    g = facts["gunicorn"]
    window = args.seconds / args.slices
    load = " ".join(map(str, facts["load_average_start"]))
    out = [
        f"ModelGate dynamic batching benchmark, {facts['date']}",
        f"machine    {facts['cpu_count']} CPUs ({facts['cpu_usable']} usable), "
        f"{facts['platform']}, Python {facts['python']}; load average at start {load}",
        f"packages   {', '.join(facts['packages'])}",
        f"server     gunicorn {g['worker_class']}, {g['workers']} workers x {g['threads']} "
        f"threads; every worker has its own batcher per version",
        f"cells      {args.seconds:g} s measured per side, in {args.slices} windows each "
        f"interleaved off-on-on-off, each after a {throughput.server_warmup(window):g} s "
        f"warm-up; clients {','.join(map(str, args.clients))}; delays tried "
        f"{','.join(f'{d:g}' for d in args.delays)} ms (max_queue_size {args.queue_size}); "
        "API key auth, rate limits counted but out of reach",
        "",
        "Raw in-process runtime (runtime.predict, one thread)",
        throughput.raw_table(raw_results),
        "",
        "Delay sweep (binary tensors)",
        sweep_table(reports),
        "",
    ]
    if any(report.grid for report in reports):
        out += ["Batching off and on (on: the chosen delay)", grid_table(reports), ""]
    out += [LEGEND, "", "Verdicts" if any(r.grid for r in reports) else "Chosen delays"]
    for report in reports:
        raw = _rate(report.raw_best_items_per_second)
        out.append(
            f"{_label(report)} (raw best {raw} items/s at batch {report.raw_best_batch}, "
            f"chosen delay {_delay(report.chosen_delay_ms)} ms)"
        )
        out += [f"  - {v}" for v in report.verdicts]
        if report.suggestion:
            out.append(f"  suggests: {report.suggestion}")
    out += ["", "Notes", *(f"- {n}" for n in notes)]
    return "\n".join(out)


# -- orchestration ---------------------------------------------------------------------------


def _numbers(text: str, kind: Callable[[str], Any]) -> list[Any]:
    return [kind(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=1.5, help="measured seconds per side of a pair"
    )
    parser.add_argument("--models", default="", help="only these models, comma-separated")
    parser.add_argument(
        "--clients", default="1,8,32,64", help="client counts, comma-separated (default 1,8,32,64)"
    )
    parser.add_argument(
        "--delays", default="0,1,2,5", help="max_batch_delay_ms values to try (default 0,1,2,5)"
    )
    parser.add_argument(
        "--sweep-only", action="store_true", help="only the delay sweep, no grid and no verdicts"
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=2,
        help="windows per side of an off/on pair, interleaved off-on-on-off (default 2)",
    )
    parser.add_argument(
        "--queue-size", type=int, default=64, help="max_queue_size of the on copies"
    )
    parser.add_argument("--workers", type=int, help="gunicorn workers (MODELGATE_WORKERS)")
    parser.add_argument("--port", type=int, help="server port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--model-root", type=Path, default=REPO_ROOT / "models", help="the model repository"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=300.0, help="seconds to wait for the server"
    )
    parser.add_argument("--server-log", type=Path, help="gunicorn's output (default: a temp file)")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the server, e.g. MODELGATE_THREADS=8",
    )
    args = parser.parse_args(argv)
    pairs = [item.partition("=") for item in args.server_env]
    if any(not name or not sep for name, sep, _ in pairs):
        parser.error("--server-env takes NAME=VALUE")
    args.server_env = {name: value for name, _, value in pairs}
    try:
        args.clients = sorted(set(_numbers(args.clients, int)))
        args.delays = sorted(set(_numbers(args.delays, float)))
    except ValueError:
        parser.error("--clients takes integers, --delays numbers, comma-separated")
    if not args.clients or min(args.clients) < 1 or max(args.clients) > 256:
        parser.error("--clients takes 1 to 256 clients")
    if not args.delays or min(args.delays) < 0 or max(args.delays) > 1000:
        parser.error("--delays takes 0 to 1000 ms")
    if len(args.delays) >= 10:
        parser.error("--delays takes at most 9 values")
    if not 0.1 <= args.seconds <= 600:
        parser.error("--seconds must be between 0.1 and 600")
    if not 1 <= args.slices <= 10:
        parser.error("--slices must be between 1 and 10")
    if args.queue_size < 1:
        parser.error("--queue-size must be positive")
    if args.workers is not None and not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    if args.port is not None and not 1024 <= args.port <= 65535:
        parser.error("--port must be between 1024 and 65535")
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()] or None
    return args


def measure_raw_limits(
    targets: Sequence[Target], seconds: float, emit: Callable[[str], None]
) -> list[throughput.RawResult]:
    results = []
    for i, target in enumerate(targets):
        for batch in RAW_BATCH_SIZES:
            result = throughput.measure_raw(target, batch, seconds, seed=i)
            results.append(result)
            emit(
                f"  raw {target.model} v{target.version} batch {batch:>2}: "
                f"{_rate(result.items_per_second)} items/s"
            )
    return results


def run_version(
    session: Session,
    target: Target,
    report: VersionReport,
    args: argparse.Namespace,
    notes: list[str],
) -> None:
    """Sanity checks, the delay sweep and the grid of one version."""
    rng = np.random.default_rng(target.version)
    found = encodings(target, rng)
    port = session.server.port
    for encoding in found:
        for index in range(len(args.delays) + 1):
            served = served_version(target.version, index)
            status, body = post_once(
                port, encoding.path(served), encoding.requests[0], session.headers
            )
            if status != 200:
                notes.append(
                    f"{target.model} v{served} {encoding.name}: {status} "
                    f"{body[:200].decode('utf-8', 'replace')}"
                )
    samples = inputs.predict_samples(target.spec)
    if samples:
        path = f"/api/models/{target.model}/versions/{target.version}/predict"
        check = throughput.check_samples(port, path, samples, session.headers)
        if check:
            notes.append(f"{target.model} v{target.version} uploads: {check}")

    binary = next(e for e in found if e.name == "binary")
    raw = report.raw_best_items_per_second
    high = max(sweep_clients(args.clients))
    report.sweep.append(session.pair(target, binary, high, 0, None, raw))  # A/A
    for clients in sweep_clients(args.clients):
        for index, delay in enumerate(args.delays, start=1):
            report.sweep.append(session.pair(target, binary, clients, index, delay, raw))
    aa = report.sweep[0]
    saving = (
        report.raw_saving_ms / aa.off_cpu_ms
        if report.raw_saving_ms is not None and aa.off_cpu_ms
        else None
    )
    report.chosen_delay_ms = choose_delay(report.sweep, saving)
    chosen = args.delays.index(report.chosen_delay_ms) + 1
    session.emit(f"  {target.model} v{target.version}: delay {report.chosen_delay_ms:g} ms")
    if args.sweep_only:
        return
    for encoding in found:
        for clients in args.clients:
            report.grid.append(
                session.pair(target, encoding, clients, chosen, report.chosen_delay_ms, raw)
            )
    judge(report)


def estimate_minutes(args: argparse.Namespace, versions: int, encodings_each: int = 3) -> float:
    grid = 0 if args.sweep_only else encodings_each * len(args.clients)
    pairs = versions * (1 + len(sweep_clients(args.clients)) * len(args.delays) + grid)
    window = args.seconds / args.slices
    return pairs * 2 * args.slices * (window + throughput.server_warmup(window) + 0.3) / 60


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # A polite kill (SIGTERM) unwinds like Ctrl-C, so the server is always stopped.
    signal.signal(signal.SIGTERM, _interrupted)
    port = args.port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="modelgate-batching-"))
    root = workdir / "models"
    copy_models(args.model_root, root, args.model_list)
    log_path = args.server_log or workdir / "server.log"
    env = throughput.server_env(
        argparse.Namespace(model_root=root, workers=args.workers, server_env=args.server_env),
        port,
        workdir,
    )
    facts = throughput.machine_facts(throughput.gunicorn_settings(env))
    workers = int(facts["gunicorn"]["workers"])
    notes: list[str] = []
    reports: list[VersionReport] = []
    stop = threading.Event()
    try:
        progress(f"loading {root} in-process (batching off) ...")
        service = throughput.start_service(root)
        targets, skipped = throughput.select_targets(service, args.model_list)
        notes.extend(skipped)
        if not targets:
            progress("no READY model version to measure")
            return 1
        progress(
            f"{len(targets)} versions; the server part takes about "
            f"{estimate_minutes(args, len(targets)):.0f} min"
        )
        raw_results = measure_raw_limits(targets, args.seconds, progress)
        service.stop()
        for target in targets:
            mine = [
                r
                for r in raw_results
                if (r.model, r.version) == (target.model, target.version) and r.items_per_second
            ]
            best = max(mine, key=lambda r: r.items_per_second or 0, default=None)
            single = next((r for r in mine if r.batch == 1), None)
            reports.append(
                VersionReport(
                    target.model,
                    target.version,
                    target.spec.runtime,
                    best.items_per_second if best else None,
                    best.batch if best else None,
                )
            )
            if best and best.items_per_second and single and single.items_per_second:
                reports[-1].raw_saving_ms = 1000 / single.items_per_second - (
                    1000 / best.items_per_second
                )
        versions = add_batched_copies(root, targets, args.delays, args.queue_size)

        progress(f"migrating a throwaway database in {workdir} ...")
        login = credentials.prepare_database(throughput._venv_tool("flask"), REPO_ROOT, env)
        progress(f"starting gunicorn on {HOST}:{port}, {versions} versions (log: {log_path}) ...")
        started = time.monotonic()
        gunicorn = throughput._venv_tool("gunicorn")
        with GunicornServer(gunicorn, REPO_ROOT, env, port, log_path) as server:
            note = server.wait_ready(args.ready_timeout, versions, workers)
            if note:
                notes.append(note)
            found = len(server.workers())
            progress(f"server ready in {time.monotonic() - started:.0f}s with {found} workers")
            if found != workers:
                notes.append(f"expected {workers} gunicorn workers, found {found}")
            headers = credentials.auth_headers(port, login, "key")
            session = Session(server, headers, args.seconds, args.slices, found, stop, progress)
            for target, report in zip(targets, reports, strict=True):
                run_version(session, target, report, args, notes)
    except KeyboardInterrupt:
        progress("interrupted; the server, if started, has been stopped")
        return 130
    except RuntimeError as err:
        progress(f"error: {err}")
        return 1
    finally:
        stop.set()

    for report in reports:
        for cell in report.sweep + report.grid:
            for side, load in (("off", cell.off), ("on", cell.on)):
                if load and (load.errors or load.warmup_errors or load.note):
                    notes.append(
                        f"{cell.model} v{cell.version} {cell.encoding} x{cell.clients} {side}: "
                        f"{load.errors} errors {load.error_kinds} (+{load.warmup_errors} in the "
                        f"warm-up) {load.note} {load.error_sample}".rstrip()
                    )
    facts["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    notes.append(f"load average at end {' '.join(map(str, facts['load_average_end']))}")
    notes.append(f"server log: {log_path}")
    print(report_text(facts, args, raw_results, reports, notes), flush=True)
    if args.json:
        document = {
            "machine": facts,
            "settings": {
                "argv": sys.argv,
                "seconds": args.seconds,
                "slices": args.slices,
                "clients": args.clients,
                "delays_ms": args.delays,
                "queue_size": args.queue_size,
                "models": args.model_list,
                "server_env": args.server_env,
                "server_warmup_seconds": throughput.server_warmup(args.seconds / args.slices),
            },
            "raw": [asdict(r) for r in raw_results],
            "versions": [asdict(r) for r in reports],
            "notes": notes,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput and latency of every bundled model version, in-process and through gunicorn.

From the repository root (``make bench`` runs the first)::

    .venv/bin/python bench/throughput.py                     # full run, about 3-4 minutes
    .venv/bin/python bench/throughput.py --seconds 1 --models iris --json /tmp/bench.json

Two phases, in this order, in one run:

1. raw: ``runtime.predict`` called directly in a loop at batch 1, 8 and 32 on random inputs
   of each version's signature, after a warm-up. No HTTP, no pre-processing.
2. server: the real gunicorn server (``gunicorn.conf.py``, ``app:create_app()``) started as a
   subprocess on 127.0.0.1 and a free port, with N client threads on keep-alive connections
   sending one-item requests back-to-back to the v2 ``infer`` route (a JSON tensor) and to
   the own ``predict`` route (an image upload, or a JSON instance for tabular models).
   The clients authenticate with an API key created in a throwaway database (credentials.py).

The load generator runs on the same machine as the server and competes with it for the CPUs,
so absolute figures say little; the ``server/raw`` column (server items/s divided by raw
items/s at batch 1 for the same version, same run) is the figure to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # Run as a script (python bench/throughput.py) only bench/ itself is on the path.
    sys.path.insert(0, str(REPO_ROOT))

from bench import credentials, inputs  # noqa: E402
from bench.loadgen import (  # noqa: E402
    HOST,
    GunicornServer,
    LoadResult,
    free_port,
    machine_cpu_seconds,
    other_cpu_percent,
    own_cpu_seconds,
    percentiles_ms,
    post_once,
    run_load,
)

if TYPE_CHECKING:
    from serving.manifest import VersionSpec
    from serving.service import InferenceService

BATCH_SIZES = (1, 8, 32)
RAW_WARMUP_SECONDS = 0.5
RAW_WARMUP_CALLS = 50
MAX_CALLS_PER_CELL = 2_000_000
INFER_BODIES_PER_VERSION = 8


@dataclass
class Target:
    """One READY version, loaded in this process."""

    model: str
    version: int
    spec: VersionSpec
    runtime: Any


@dataclass
class RawResult:
    model: str
    version: int
    runtime: str
    batch: int
    calls: int = 0
    seconds: float = 0.0
    items_per_second: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    other_cpu_percent: float | None = None
    note: str = ""


@dataclass
class ServerResult:
    model: str
    version: int
    route: str
    load: LoadResult
    server_over_raw: float | None = None


# -- phase 1: in-process runtime ---------------------------------------------------------------


def start_service(model_root: Path) -> InferenceService:
    """The serving core on ``model_root``, loaded in the foreground (imports TF if needed)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from serving.service import InferenceService
    from serving.settings import ServingSettings

    # The server's interpreter threads (config.py defaults, or what the environment tells
    # the server), so both phases run the same runtime configuration.
    settings = ServingSettings(
        model_root=model_root,
        load_in_background=False,
        tflite_threads=int(os.environ.get("MODELGATE_TFLITE_THREADS", "1")),
        tf_intra_op_threads=int(os.environ.get("MODELGATE_TF_INTRA_OP_THREADS", "1")),
    )
    service = InferenceService(settings)
    service.start()
    return service


def select_targets(
    service: InferenceService, wanted: Sequence[str] | None
) -> tuple[list[Target], list[str]]:
    """READY versions of the wanted models (all when None), and notes on what was skipped."""
    from serving.registry import VersionState

    names = {m.name for m in service.models()}
    unknown = sorted(set(wanted or ()) - names)
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; the repository has {sorted(names)}")
    targets: list[Target] = []
    notes: list[str] = []
    for model in sorted(service.models(), key=lambda m: m.name):
        if wanted and model.name not in wanted:
            continue
        for number, version in sorted(model.versions.items()):
            if version.state is not VersionState.READY or version.spec is None:
                notes.append(f"skipped {model.name} v{number}: {version.state} {version.reason}")
                continue
            targets.append(Target(model.name, number, version.spec, version.runtime))
    return targets, notes


def measure_raw(target: Target, batch: int, seconds: float, seed: int) -> RawResult:
    """Items per second of ``runtime.predict`` at one batch size, after a short warm-up."""
    result = RawResult(target.model, target.version, target.spec.runtime, batch)
    if batch > target.spec.max_batch_size:
        result.note = f"> max_batch_size {target.spec.max_batch_size}"
        return result
    rng = np.random.default_rng(seed)
    batches = [inputs.random_inputs(target.spec, batch, rng) for _ in range(4)]
    predict = target.runtime.predict
    # The warm-up also pays for a TFLite interpreter's resize to this batch size.
    warm_until = time.perf_counter() + RAW_WARMUP_SECONDS
    for i in range(RAW_WARMUP_CALLS):
        predict(batches[i % len(batches)])
        if time.perf_counter() >= warm_until:
            break
    latencies: list[float] = []
    own_before, machine_before = own_cpu_seconds(), machine_cpu_seconds()
    start = time.perf_counter()
    deadline = start + seconds
    for i in range(MAX_CALLS_PER_CELL):
        began = time.perf_counter()
        predict(batches[i % len(batches)])
        ended = time.perf_counter()
        latencies.append(ended - began)
        if ended >= deadline:
            break
    result.seconds = time.perf_counter() - start
    own = own_cpu_seconds() - own_before
    result.other_cpu_percent, _ = other_cpu_percent(
        machine_before, machine_cpu_seconds(), own, result.seconds
    )
    result.calls = len(latencies)
    result.items_per_second = result.calls * batch / result.seconds
    result.p50_ms, result.p99_ms = percentiles_ms(latencies)
    return result


# -- phase 2: the real server ----------------------------------------------------------------


def check_samples(
    port: int, path: str, samples: Sequence[inputs.Sample], headers: Mapping[str, str]
) -> str:
    """Send each predict sample once; says how many came back with the expected label."""
    right = checked = 0
    failures: dict[str, int] = {}
    for sample in samples:
        status, payload = post_once(port, path, (sample.body, sample.content_type), headers)
        if status != 200:
            failures[str(status)] = failures.get(str(status), 0) + 1
            continue
        if sample.expected is not None:
            checked += 1
            try:
                label = json.loads(payload)["predictions"][0]["label"]
            except (ValueError, LookupError, TypeError):
                label = None
            right += label == sample.expected
    parts = [f"{right}/{checked} sample inputs got the expected label"] if checked else []
    if failures:
        parts.append(f"failed: {failures}")
    return "; ".join(parts)


def server_env(args: argparse.Namespace, port: int, workdir: Path) -> dict[str, str]:
    """This process's environment, the server's bind, models and throwaway state, then the
    ``--server-env`` overrides."""
    env = dict(os.environ)
    env["MODELGATE_BIND"] = f"{HOST}:{port}"
    env["MODELGATE_MODEL_ROOT"] = str(args.model_root.resolve())
    if args.workers is not None:
        env["MODELGATE_WORKERS"] = str(args.workers)
    env.update(credentials.server_env(workdir / "bench.db"))
    env.update(args.server_env)
    return env


def _venv_tool(name: str) -> Path:
    tool = REPO_ROOT / ".venv" / "bin" / name
    return tool if tool.exists() else Path(sys.executable).with_name(name)


def server_warmup(seconds: float) -> float:
    return round(min(1.0, max(0.3, seconds / 3)), 2)


def run_server_phase(
    args: argparse.Namespace,
    targets: Sequence[Target],
    raw_b1: Mapping[tuple[str, int], float | None],
    versions_per_worker: int,
    env: Mapping[str, str],
    port: int,
    workers: int,
    log_path: Path,
    notes: list[str],
    emit: Callable[[str], None],
) -> list[ServerResult]:
    """Start gunicorn, load every route of every target at every concurrency, stop it."""
    emit(f"migrating a throwaway database ({env.get('MODELGATE_SQLALCHEMY_DATABASE_URI')}) ...")
    login = credentials.prepare_database(_venv_tool("flask"), REPO_ROOT, env)
    results: list[ServerResult] = []
    stop = threading.Event()
    emit(f"starting gunicorn on {HOST}:{port} (log: {log_path}) ...")
    started = time.monotonic()
    try:
        with GunicornServer(_venv_tool("gunicorn"), REPO_ROOT, env, port, log_path) as server:
            note = server.wait_ready(args.ready_timeout, versions_per_worker, workers)
            if note:
                notes.append(note)
            found = len(server.workers())
            emit(f"server ready in {time.monotonic() - started:.1f}s with {found} workers")
            if found != workers:
                notes.append(f"expected {workers} gunicorn workers, found {found}")
            headers = credentials.auth_headers(port, login, args.auth)
            rng = np.random.default_rng(1)
            for target in targets:
                base = f"/{target.model}/versions/{target.version}"
                bodies = [
                    inputs.infer_body(target.spec, rng) for _ in range(INFER_BODIES_PER_VERSION)
                ]
                routes = [
                    ("infer", f"/v2/models{base}/infer", [(b, "application/json") for b in bodies])
                ]
                samples = inputs.predict_samples(target.spec)
                if samples:
                    path = f"/api/models{base}/predict"
                    check = check_samples(port, path, samples, headers)
                    if check:
                        notes.append(f"{target.model} v{target.version} predict: {check}")
                    routes.append(("predict", path, [(s.body, s.content_type) for s in samples]))
                else:
                    notes.append(
                        f"{target.model} v{target.version}: predict route not measured "
                        "(no post-processing, or neither image nor features pre-processing)"
                    )
                for route, path, requests in routes:
                    for clients in args.clients:
                        load = run_load(
                            server,
                            path,
                            requests,
                            headers,
                            clients,
                            args.seconds,
                            server_warmup(args.seconds),
                            stop,
                        )
                        result = ServerResult(target.model, target.version, route, load)
                        raw = raw_b1.get((target.model, target.version))
                        if raw and load.items_per_second is not None:
                            result.server_over_raw = load.items_per_second / raw
                        results.append(result)
                        emit(
                            f"  server {target.model} v{target.version} {route:7} "
                            f"{clients:>3} clients: {_rate(load.items_per_second)} items/s, "
                            f"{load.errors} errors"
                        )
    finally:
        stop.set()
    return results


# -- reporting -------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table; a column whose cells all look numeric is right-aligned."""

    def numeric(cell: str) -> bool:
        return cell in ("n/a", "") or re.fullmatch(r"[0-9.,/%-]+", cell) is not None

    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    right = [bool(rows) and all(numeric(r[i]) for r in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _rate(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value >= 0.01 else f"{value:.5f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def raw_table(results: Sequence[RawResult]) -> str:
    headers = ["model", "v", "runtime", "batch", "calls", "items/s", "p50 ms", "p99 ms"]
    headers += ["other cpu", "note"]
    rows = [
        [
            r.model,
            str(r.version),
            r.runtime,
            str(r.batch),
            str(r.calls),
            _rate(r.items_per_second),
            _ms(r.p50_ms),
            _ms(r.p99_ms),
            _percent(r.other_cpu_percent),
            r.note,
        ]
        for r in results
    ]
    return format_table(headers, rows)


def server_table(results: Sequence[ServerResult]) -> str:
    headers = ["model", "v", "route", "clients", "requests", "items/s", "p50 ms", "p99 ms"]
    headers += ["errors", "server/raw", "srv cpu", "worker %", "bench cpu", "other cpu", "note"]
    rows = [
        [
            r.model,
            str(r.version),
            r.route,
            str(r.load.clients),
            str(r.load.requests),
            _rate(r.load.items_per_second),
            _ms(r.load.p50_ms),
            _ms(r.load.p99_ms),
            str(r.load.errors),
            _ratio(r.server_over_raw),
            _percent(r.load.server_cpu_percent),
            "/".join(str(s) for s in r.load.worker_cpu_split) or "n/a",
            _percent(r.load.bench_cpu_percent),
            _percent(r.load.other_cpu_percent),
            r.load.note,
        ]
        for r in results
    ]
    return format_table(headers, rows)


AUTH_DESCRIPTION = {
    "key": "an API key (X-API-Key; usage recorded per request)",
    "token": "the admin's bearer token (JWT)",
}

SERVER_LEGEND = """\
infer       POST /v2/models/<m>/versions/<v>/infer, a JSON tensor of one random item
predict     POST /api/models/<m>/versions/<v>/predict, one PNG upload (image models) or one
            JSON instance (tabular models): decoding and pre-processing included
server/raw  server items/s / raw in-process items/s at batch 1, same version, same run
srv cpu     CPU the gunicorn workers used in the window (100% = one core); worker %: each
            worker's share of it; bench cpu: this process (mostly the client threads)
other cpu   CPU that everything else on the machine used meanwhile: well above 0%, the
            server and raw figures were measured against someone else's job"""


def _package(*names: str) -> str:
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"{name} {metadata.version(name)}"
    return f"{names[0]} (not installed)"


def gunicorn_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """What gunicorn.conf.py resolves to under ``env``, by running it (it only reads env)."""
    import runpy
    from unittest import mock

    with mock.patch.dict(os.environ, env, clear=True):
        values = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    keys = ("bind", "workers", "worker_class", "threads", "timeout", "keepalive")
    return {k: values.get(k) for k in keys}


def machine_facts(gunicorn: Mapping[str, Any]) -> dict[str, Any]:
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": [
            _package("tensorflow-cpu", "tensorflow"),
            _package("ai-edge-litert"),
            _package("gunicorn"),
            _package("flask"),
            _package("numpy"),
        ],
        "gunicorn": dict(gunicorn),
        "in_process": {
            "tflite_threads": int(os.environ.get("MODELGATE_TFLITE_THREADS", "1")),
            "tf_intra_op_threads": int(os.environ.get("MODELGATE_TF_INTRA_OP_THREADS", "1")),
        },
    }


def header(facts: Mapping[str, Any], args: argparse.Namespace) -> str:
    g = facts["gunicorn"]
    threads = facts["in_process"]
    cpus = facts["cpu_count"]
    load = " ".join(map(str, facts["load_average_start"]))
    return "\n".join(
        [
            f"ModelGate throughput benchmark, {facts['date']}",
            f"machine    {cpus} CPUs ({facts['cpu_usable']} usable), {facts['platform']}, "
            f"Python {facts['python']}; load average at start {load}",
            f"packages   {', '.join(facts['packages'])}",
            f"server     gunicorn {g['worker_class']}, {g['workers']} workers x {g['threads']} "
            f"threads on {g['bind']}; runtimes: tflite_threads={threads['tflite_threads']}, "
            f"tf_intra_op_threads={threads['tf_intra_op_threads']} (in-process the same)",
            f"cells      {args.seconds:g} s measured after a warm-up ({RAW_WARMUP_SECONDS:g} s "
            f"raw, {server_warmup(args.seconds):g} s server); clients "
            f"{','.join(map(str, args.clients))}",
            f"clients    authenticate with {AUTH_DESCRIPTION[args.auth]}; rate limits raised "
            "out of reach (still counted); users, keys and",
            "           counters in a throwaway SQLite database"
            + (f"; server env {args.server_env}" if args.server_env else ""),
            f"note       the load generator ({max(args.clients)} client threads in this "
            f"process) runs on the same {cpus} CPUs as the server and competes",
            "           with it for CPU, so read the server figures as ratios to the raw "
            "in-process figure of the same run (server/raw).",
        ]
    )


def report_text(
    facts: Mapping[str, Any],
    args: argparse.Namespace,
    raw_results: Sequence[RawResult],
    server_results: Sequence[ServerResult],
    notes: Sequence[str],
) -> str:
    out = [header(facts, args), "", "Raw in-process runtime (runtime.predict)"]
    out.append(raw_table(raw_results))
    out.append("(other cpu: what the rest of the machine used during the cell; 100% = one core)")
    if server_results:
        out += ["", "Server (real gunicorn; one item per request, back-to-back per client)"]
        out += [server_table(server_results), "", SERVER_LEGEND]
    out += ["", "Notes", *(f"- {n}" for n in notes)]
    return "\n".join(out)


# -- orchestration ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument(
        "--concurrency", default="1,8,32", help="client counts, comma-separated (default 1,8,32)"
    )
    parser.add_argument("--models", default="", help="only these models, comma-separated")
    parser.add_argument("--workers", type=int, help="gunicorn workers (MODELGATE_WORKERS)")
    parser.add_argument("--port", type=int, help="server port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--model-root", type=Path, default=REPO_ROOT / "models", help="the model repository"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=240.0, help="seconds to wait for the server"
    )
    parser.add_argument("--server-log", type=Path, help="gunicorn's output (default: a temp file)")
    parser.add_argument(
        "--auth",
        choices=("key", "token"),
        default="key",
        help="clients send an API key (default) or the admin's bearer token",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the server, e.g. MODELGATE_RATELIMIT_ENABLED=false",
    )
    parser.add_argument("--skip-server", action="store_true", help="only the in-process phase")
    args = parser.parse_args(argv)
    pairs = [item.partition("=") for item in args.server_env]
    if any(not name or not sep for name, sep, _ in pairs):
        parser.error("--server-env takes NAME=VALUE")
    args.server_env = {name: value for name, _, value in pairs}
    try:
        args.clients = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency takes integers, e.g. 1,8,32")
    if not args.clients or min(args.clients) < 1 or max(args.clients) > 256:
        parser.error("--concurrency takes 1 to 256 clients")
    if not 0.1 <= args.seconds <= 600:
        parser.error("--seconds must be between 0.1 and 600")
    if args.workers is not None and not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    if args.port is not None and not 1024 <= args.port <= 65535:
        parser.error("--port must be between 1024 and 65535")
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()] or None
    return args


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # A polite kill (SIGTERM) unwinds like Ctrl-C, so the server is always stopped.
    signal.signal(signal.SIGTERM, _interrupted)
    port = args.port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="modelgate-bench-"))
    log_path = args.server_log or workdir / "server.log"
    env = server_env(args, port, workdir)
    gunicorn = gunicorn_settings(env)
    facts = machine_facts(gunicorn)
    notes: list[str] = []
    raw_results: list[RawResult] = []
    server_results: list[ServerResult] = []
    try:
        progress(f"loading the models in {args.model_root} in-process ...")
        started = time.monotonic()
        service = start_service(args.model_root)
        versions_per_worker = sum(len(m.versions) for m in service.models())
        targets, skipped = select_targets(service, args.model_list)
        notes.extend(skipped)
        if not targets:
            progress("no READY model version to measure")
            return 1
        progress(f"{len(targets)} versions ready in {time.monotonic() - started:.1f}s")
        for i, target in enumerate(targets):
            for batch in BATCH_SIZES:
                result = measure_raw(target, batch, args.seconds, seed=i)
                raw_results.append(result)
                progress(
                    f"  raw {target.model} v{target.version} batch {batch:>2}: "
                    f"{_rate(result.items_per_second)} items/s"
                )
        raw_b1 = {(r.model, r.version): r.items_per_second for r in raw_results if r.batch == 1}
        service.stop()
        if not args.skip_server:
            workers = int(gunicorn["workers"])
            server_results = run_server_phase(
                args,
                targets,
                raw_b1,
                versions_per_worker,
                env,
                port,
                workers,
                log_path,
                notes,
                progress,
            )
    except KeyboardInterrupt:
        progress("interrupted; the server, if started, has been stopped")
        return 130
    except RuntimeError as err:
        progress(f"error: {err}")
        return 1

    for r in server_results:
        if r.load.errors or r.load.warmup_errors:
            notes.append(
                f"{r.model} v{r.version} {r.route} x{r.load.clients}: {r.load.errors} errors "
                f"{r.load.error_kinds} (+{r.load.warmup_errors} in the warm-up), "
                f"first: {r.load.error_sample}"
            )
    facts["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    notes.append(f"load average at end {' '.join(map(str, facts['load_average_end']))}")
    print(report_text(facts, args, raw_results, server_results, notes), flush=True)
    if args.json:
        report = {
            "machine": facts,
            "settings": {
                "argv": sys.argv,
                "seconds": args.seconds,
                "clients": args.clients,
                "batch_sizes": list(BATCH_SIZES),
                "models": args.model_list,
                "model_root": str(args.model_root),
                "port": port,
                "raw_warmup_seconds": RAW_WARMUP_SECONDS,
                "server_warmup_seconds": server_warmup(args.seconds),
                "auth": args.auth,
                "server_env": args.server_env,
                "server_log": str(log_path),
            },
            "raw": [asdict(r) for r in raw_results],
            "server": [asdict(r) for r in server_results],
            "notes": notes,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`flask models ...`: optimize, import and compare versions in the model repository.

Each command turns its arguments into one call of the serving core (``serving.optimize``,
``serving.modelimport``) and prints what came back. ``--canary`` then changes traffic through
the same audited deployment store as ``flask deploy canary``.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from deployments import store
from serving import routing
from serving.errors import ServingError
from serving.modelimport import import_model
from serving.optimize import MODES, OptimizeResult, optimize
from serving.optimize.report import VersionRow, version_report

models_cli = AppGroup("models", help="Optimize, import and compare model versions (offline).")


def _root() -> Path:
    return Path(current_app.config["MODEL_ROOT"])


def _progress(stage: str, done: float) -> None:
    click.echo(f"[{done:4.0%}] {stage}", err=True)


def _bytes(n: int | float | None) -> str:
    return "-" if n is None else f"{int(n):,} B"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g} ms"


def _ratio(before: float, after: float, word: str) -> str:
    return f"{before / after:.1f}x {word}" if after > 0 else ""


def _summary(result: OptimizeResult) -> str:
    before, after = result.source, result.result
    rows = [
        ("", f"source ({result.derived_from})", f"v{result.version} tflite {result.mode}", ""),
        (
            "size",
            _bytes(before.artifact_bytes),
            _bytes(after.artifact_bytes),
            _ratio(before.artifact_bytes, after.artifact_bytes, "smaller"),
        ),
        (
            "latency, 1 item",
            _ms(before.latency_single_ms),
            _ms(after.latency_single_ms),
            _ratio(before.latency_single_ms, after.latency_single_ms, "faster"),
        ),
        (
            f"latency, {after.batch_size} items",
            _ms(before.latency_batch_ms),
            _ms(after.latency_batch_ms),
            _ratio(before.latency_batch_ms, after.latency_batch_ms, "faster"),
        ),
        (
            f"holdout accuracy (n={after.holdout_size})",
            f"{before.accuracy:.2%}",
            f"{after.accuracy:.2%}",
            f"{-result.accuracy_drop * 100 + 0.0:+.2f} pp "
            f"(limit -{result.max_accuracy_drop * 100:.2f})",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"{result.model} version {result.version} written to {result.path}",
        "",
        *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows),
        "",
        "training-only ops removed:",
        *(f"  {line}" for line in result.ops.removed or ("none found in the source",)),
        "training-only ops left in the served graph: "
        + (", ".join(result.ops.remaining) or "none"),
        "served ops: " + ", ".join(result.ops.served_lines()),
    ]
    return "\n".join(lines)


def _set_canary(model: str, version: int, percent: float) -> None:
    # A model the servers have not seeded yet gets its declared state first, as they would.
    store.seed(_root() / "routing.toml", {model})
    policy = store.change(
        model,
        "canary",
        f"cli:{getpass.getuser()}",
        lambda before: routing.canary(before, version, percent),
    )
    click.echo(
        f"canary: {percent:g} % of {model} traffic goes to version {version} as soon as the "
        f"servers have loaded and warmed it up (revision {policy.revision})"
    )
    click.echo(json.dumps(policy.to_dict(), indent=2))


@models_cli.command("optimize")
@click.argument("model")
@click.option(
    "--from",
    "source",
    required=True,
    help="A version number (SavedModel), or the path of a Keras file or SavedModel directory.",
)
@click.option("--mode", type=click.Choice(MODES), required=True)
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Largest holdout accuracy loss allowed, as a fraction (0.01 = 1 percentage point).",
)
@click.option(
    "--canary",
    type=click.FloatRange(0, 100),
    default=None,
    help="Send this percentage of traffic to the new version (0 = dark launch).",
)
def optimize_command(
    model: str, source: str, mode: str, max_accuracy_drop: float, canary: float | None
) -> None:
    """Derive an optimized TFLite version of MODEL; refuse it if it loses accuracy."""
    origin: int | Path = int(source) if source.isdigit() else Path(source)
    try:
        result = optimize(
            _root(),
            model,
            origin,
            mode,
            max_accuracy_drop=max_accuracy_drop,
            progress=_progress,
        )
    except ServingError as err:
        raise click.ClickException(err.message) from err
    click.echo(_summary(result))
    if canary is not None:
        try:
            _set_canary(model, result.version, canary)
        except ServingError as err:
            raise click.ClickException(
                f"version {result.version} was written, but the canary was not set: {err.message}"
            ) from err


@models_cli.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", "model", required=True, help="The model to add the version to.")
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A text file with one class label per line.",
)
def import_command(path: Path, model: str, labels: Path | None) -> None:
    """Add a Keras file, SavedModel directory or TFLite file at PATH as a new version."""
    try:
        result = import_model(_root(), path, model, labels_file=labels)
    except ServingError as err:
        raise click.ClickException(err.message) from err
    click.echo(
        f"{result.model} version {result.version} ({result.source_format}) written to "
        f"{result.path}; review its manifest:\n"
    )
    click.echo(result.manifest)


def _table(rows: list[VersionRow]) -> str:
    header = ("version", "format", "size", "latency 1 item", "latency batch", "accuracy", "from")
    cells = [header]
    for row in rows:
        accuracy = "-"
        if row.accuracy is not None:
            accuracy = f"{row.accuracy:.2%}" + (
                f" (n={row.holdout_size})" if row.holdout_size else ""
            )
        cells.append(
            (
                str(row.version),
                row.format,
                _bytes(row.artifact_bytes),
                _ms(row.latency_single_ms),
                _ms(row.latency_batch_ms),
                accuracy,
                row.derived_from or "-",
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines += [f"version {r.version}: {r.problem}" for r in rows if r.problem]
    return "\n".join(lines)


@models_cli.command("report")
@click.argument("model")
@click.option(
    "--measure",
    is_flag=True,
    help="Measure latency and holdout accuracy on this machine now instead of quoting manifests.",
)
def report_command(model: str, measure: bool) -> None:
    """Print every version of MODEL: format, size, latency, accuracy, derived from."""
    try:
        rows = version_report(
            _root(), model, measure_now=measure, progress=_progress if measure else None
        )
    except ServingError as err:
        raise click.ClickException(err.message) from err
    click.echo(_table(rows))
    if not measure:
        click.echo("(figures from the manifests; --measure measures them on this machine)")

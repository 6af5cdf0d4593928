"""`flask deploy ...`: change traffic from the command line, through the same audited store.

The CLI does not load models, so it cannot see whether a version is READY on the servers; it
refuses versions that have no directory, and the servers route only to READY versions.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from deployments import store
from serving import routing
from serving.errors import ServingError
from serving.routing import TrafficPolicy

deploy_cli = AppGroup("deploy", help="Show and change a model's traffic policy (audited).")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _check_version(model: str, version: int) -> None:
    if not (Path(current_app.config["MODEL_ROOT"]) / model / str(version)).is_dir():
        raise click.UsageError(f"'{model}' has no version directory {version}")


def _apply(model: str, action: str, edit: Callable[[TrafficPolicy], TrafficPolicy]) -> None:
    if not (Path(current_app.config["MODEL_ROOT"]) / model).is_dir():
        raise click.UsageError(f"no model '{model}'")
    try:
        policy = store.change(model, action, _actor(), edit)
    except ServingError as err:
        raise click.ClickException(err.message) from err
    click.echo(json.dumps(policy.to_dict(), indent=2))


@deploy_cli.command("show")
@click.argument("model")
def show(model: str) -> None:
    """Print MODEL's traffic policy."""
    click.echo(json.dumps(store.current(model).to_dict(), indent=2))


@deploy_cli.command("promote")
@click.argument("model")
@click.argument("version", type=int)
def promote(model: str, version: int) -> None:
    """Move MODEL's stable label to VERSION (all traffic)."""
    _check_version(model, version)
    _apply(model, "promote", lambda before: routing.promote(before, version))


@deploy_cli.command("rollback")
@click.argument("model")
def rollback(model: str) -> None:
    """Return MODEL's stable label to the previous stable version."""
    _apply(model, "rollback", routing.rollback)


@deploy_cli.command("canary")
@click.argument("model")
@click.argument("version", type=int)
@click.argument("percent", type=click.FloatRange(0, 100))
def canary(model: str, version: int, percent: float) -> None:
    """Send PERCENT % of MODEL's traffic to VERSION (0 = dark launch)."""
    _check_version(model, version)
    _apply(model, "canary", lambda before: routing.canary(before, version, percent))


@deploy_cli.command("end-canary")
@click.argument("model")
def end_canary(model: str) -> None:
    """All of MODEL's traffic back to stable."""
    _apply(model, "canary-end", routing.end_canary)


@deploy_cli.command("audit")
@click.argument("model", required=False)
@click.option("--limit", default=20, show_default=True)
def audit(model: str | None, limit: int) -> None:
    """Print the latest audit records."""
    for record in store.audit(model, limit):
        click.echo(
            f"{record.at:%Y-%m-%d %H:%M:%S}  r{record.revision:<4} {record.model:<12} "
            f"{record.action:<16} {record.actor}"
        )

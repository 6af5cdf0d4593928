"""Read and change deployment state with optimistic concurrency and an audit record."""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from deployments.models import AuditRecord, Deployment
from extensions import db
from serving.errors import ServingError
from serving.routing import TrafficPolicy

log = logging.getLogger("modelgate.deploy")


class RevisionMismatch(ServingError):
    """The If-Match revision is not the current one: someone else changed the state first."""

    status = HTTPStatus.PRECONDITION_FAILED
    code = "revision_mismatch"


class StateUnavailable(ServingError):
    """The database cannot be reached: predictions go on with the last known state."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "state_unavailable"


def _policy_of(row: Deployment | None) -> TrafficPolicy:
    if row is None:
        return TrafficPolicy()
    return TrafficPolicy.from_dict({**json.loads(row.policy), "revision": row.revision})


def current(model: str) -> TrafficPolicy:
    try:
        return _policy_of(db.session.get(Deployment, model))
    except sa.exc.OperationalError as err:
        db.session.rollback()
        raise StateUnavailable("the deployment state cannot be read right now") from err


def revisions() -> dict[str, int]:
    """Every model's current revision: one cheap query for the pollers."""
    rows = db.session.execute(sa.select(Deployment.model, Deployment.revision)).all()
    return {model: revision for model, revision in rows}


def change(
    model: str,
    action: str,
    actor: str,
    edit: Callable[[TrafficPolicy], TrafficPolicy],
    expected_revision: int | None = None,
) -> TrafficPolicy:
    """Apply ``edit`` to the current policy and store it as the next revision.

    The write is a compare-and-swap on the revision, so of two concurrent changes from the
    same revision exactly one wins; the other raises RevisionMismatch (412). An audit record
    with the state before and after is written in the same transaction.
    """
    try:
        row = db.session.get(Deployment, model)
        before = _policy_of(row)
        if expected_revision is not None and expected_revision != before.revision:
            raise RevisionMismatch(
                f"revision {expected_revision} is not current ({before.revision})",
                details={"current_revision": before.revision},
            )
        after = edit(before)
        after.validate()
        new_revision = before.revision + 1
        body = json.dumps({k: v for k, v in after.to_dict().items() if k != "revision"})
        if row is None:
            db.session.add(
                Deployment(model=model, revision=new_revision, policy=body, updated_by=actor)
            )
        else:
            swapped = db.session.execute(
                sa.update(Deployment)
                .where(Deployment.model == model, Deployment.revision == before.revision)
                .values(revision=new_revision, policy=body, updated_by=actor)
                .execution_options(synchronize_session=False)
            )
            if swapped.rowcount != 1:
                raise RevisionMismatch(
                    "the deployment changed while this change was being made; retry",
                    details={"model": model},
                )
        db.session.add(
            AuditRecord(
                actor=actor,
                model=model,
                action=action,
                revision=new_revision,
                before=json.dumps(before.to_dict()) if row is not None else None,
                after=json.dumps({**after.to_dict(), "revision": new_revision}),
            )
        )
        db.session.commit()
    except sa.exc.IntegrityError as err:
        db.session.rollback()
        raise RevisionMismatch("another change created this deployment first; retry") from err
    except sa.exc.OperationalError as err:
        db.session.rollback()
        raise StateUnavailable("the deployment state cannot be written right now") from err
    except Exception:
        db.session.rollback()
        raise
    stored = TrafficPolicy.from_dict({**after.to_dict(), "revision": new_revision})
    log.info(
        "deployment changed",
        extra={
            "model": model,
            "details": {"action": action, "revision": new_revision, "actor": actor},
        },
    )
    return stored


def audit(model: str | None = None, limit: int = 100) -> list[AuditRecord]:
    query = sa.select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
    if model is not None:
        query = query.where(AuditRecord.model == model)
    return list(db.session.scalars(query))


def seed(path: Path, known_models: set[str]) -> list[str]:
    """Store the declared policy of every model in ``path`` that has no state yet."""
    if not path.exists():
        return []
    with path.open("rb") as fh:
        declared: dict[str, Any] = tomllib.load(fh)
    seeded = []
    for model, table in declared.items():
        if model not in known_models or db.session.get(Deployment, model) is not None:
            continue
        policy = TrafficPolicy.from_dict(table)
        try:
            # Revision 0 expected: a worker that seeds a moment after another one must not
            # write the same state again as revision 2.
            change(model, "seed", "routing.toml", lambda _before, p=policy: p, 0)
        except RevisionMismatch:
            continue  # another worker seeded it first
        seeded.append(model)
    return seeded

"""Batch jobs in the database: submit, look up (owner only), cancel, claim, record progress.

Every state change is one conditional UPDATE, so several workers and replicas polling the same
table never run one job twice: a job is claimed by whoever flips it, and progress is only
written by the holder of an unexpired lease.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from http import HTTPStatus

import sqlalchemy as sa
from sqlalchemy import orm

from accounts.models import utcnow
from extensions import db
from jobs.models import Job, JobResult
from serving.errors import ServingError
from serving.jobs import JobInput, ResultRow

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
ACTIVE = (QUEUED, RUNNING)


class JobNotFound(ServingError):
    """No such job, or it belongs to someone else (the answer is the same on purpose)."""

    status = HTTPStatus.NOT_FOUND
    code = "job_not_found"


class TooManyJobs(ServingError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "too_many_jobs"


class JobFinished(ServingError):
    status = HTTPStatus.CONFLICT
    code = "job_finished"


def _queue(**columns: object) -> Job:
    job = Job(id=uuid.uuid4().hex, state=QUEUED, done=0, failed=0, created_at=utcnow(), **columns)
    db.session.add(job)
    db.session.commit()
    return job


def create_task(
    *, owner: str, kind: str, model: str, version: int, params: dict[str, object]
) -> Job:
    """A job that is not items through a model (an optimization): progress in percent."""
    return _queue(
        owner=owner,
        kind=kind,
        model=model,
        version=version,
        route_reason="pinned",
        input_kind="none",
        input_name="",
        input_bytes=0,
        input_data=b"",
        params=json.dumps(params),
        total=100,
    )


def create(
    *,
    owner: str,
    model: str,
    version: int,
    route_reason: str,
    job_input: JobInput,
    input_name: str,
    data: bytes,
    max_active: int,
) -> Job:
    active = db.session.scalar(
        sa.select(sa.func.count()).where(Job.owner == owner, Job.state.in_(ACTIVE))
    )
    if active is not None and active >= max_active:
        raise TooManyJobs(
            f"{active} of your jobs are queued or running; at most {max_active} at a time",
            details={"active": active, "max_active": max_active},
        )
    return _queue(
        owner=owner,
        kind="predict",
        model=model,
        version=version,
        route_reason=route_reason,
        input_kind=job_input.kind,
        input_name=input_name[:255],
        input_bytes=len(data),
        input_data=data,
        total=job_input.total,
    )


def get(owner: str, job_id: str) -> Job:
    job = db.session.get(Job, job_id) if len(job_id) == 32 else None
    if job is None or job.owner != owner:
        raise JobNotFound(f"there is no job '{job_id}'", details={"job": job_id})
    return job


def list_for(owner: str, limit: int = 100) -> Sequence[Job]:
    query = sa.select(Job).where(Job.owner == owner).order_by(Job.created_at.desc()).limit(limit)
    return db.session.scalars(query).all()


def cancel(owner: str, job_id: str) -> Job:
    job = get(owner, job_id)
    changed = db.session.execute(
        sa.update(Job)
        .where(Job.id == job.id, Job.state.in_(ACTIVE))
        .values(state=CANCELLED, finished_at=utcnow(), lease_owner=None, input_data=b"")
    )
    db.session.commit()
    if changed.rowcount == 0:  # type: ignore[attr-defined]
        raise JobFinished(f"job '{job_id}' has already ended ({job.state})")
    db.session.refresh(job)
    return job


def results(job_id: str) -> Iterator[dict[str, object]]:
    """The stored result rows in item order, streamed from the database."""
    query = (
        sa.select(JobResult.row)
        .where(JobResult.job_id == job_id)
        .order_by(JobResult.index)
        .execution_options(yield_per=500)
    )
    for row in db.session.scalars(query):
        yield json.loads(row)


# -- the runner's side --------------------------------------------------------------------


def _claimable(now: float) -> sa.ColumnElement[bool]:
    return sa.or_(
        Job.state == QUEUED,
        sa.and_(Job.state == RUNNING, Job.lease_expires_at < now),
    )


def claim(
    worker: str, now: float, lease_seconds: float, exclude: set[str] | None = None
) -> str | None:
    """Take the oldest queued job, or a running one whose holder stopped renewing its lease;
    ``exclude``: jobs this worker handed back a moment ago."""
    query = sa.select(Job.id).where(_claimable(now)).order_by(Job.created_at).limit(5)
    if exclude:
        query = query.where(Job.id.notin_(exclude))
    candidates = db.session.scalars(query).all()
    for job_id in candidates:
        taken = db.session.execute(
            sa.update(Job)
            .where(Job.id == job_id, _claimable(now))
            .values(
                state=RUNNING,
                lease_owner=worker,
                lease_expires_at=now + lease_seconds,
                started_at=sa.func.coalesce(Job.started_at, utcnow()),
            )
        )
        db.session.commit()
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            return job_id
    return None


def load_for_run(job_id: str) -> Job:
    job = db.session.scalars(
        sa.select(Job).where(Job.id == job_id).options(orm.undefer(Job.input_data))
    ).one()
    return job


def _held(job_id: str, worker: str) -> sa.ColumnElement[bool]:
    return sa.and_(Job.id == job_id, Job.lease_owner == worker, Job.state == RUNNING)


def save_chunk(
    job_id: str, worker: str, rows: Sequence[ResultRow], now: float, lease_seconds: float
) -> bool:
    """Store a chunk's results and renew the lease in one transaction; False (nothing stored)
    if this worker no longer holds the job: cancelled, or taken over after its lease ran out."""
    ok = sum(1 for r in rows if r.error is None)
    renewed = db.session.execute(
        sa.update(Job)
        .where(_held(job_id, worker))
        .values(
            done=Job.done + ok,
            failed=Job.failed + (len(rows) - ok),
            lease_expires_at=now + lease_seconds,
        )
    )
    if renewed.rowcount != 1:  # type: ignore[attr-defined]
        db.session.rollback()
        return False
    db.session.add_all(
        JobResult(
            job_id=job_id,
            index=r.index,
            row=json.dumps(r.to_dict(), allow_nan=False),
            ok=r.error is None,
        )
        for r in rows
    )
    try:
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        return False
    return True


def renew(job_id: str, worker: str, now: float, lease_seconds: float, done: int | None) -> bool:
    """Keep the lease (and, for a task, set its percent done); False if it was lost."""
    values: dict[str, object] = {"lease_expires_at": now + lease_seconds}
    if done is not None:
        values["done"] = done
    renewed = db.session.execute(sa.update(Job).where(_held(job_id, worker)).values(**values))
    db.session.commit()
    return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]


def finish(
    job_id: str,
    worker: str,
    state: str,
    error: str | None = None,
    result: dict[str, object] | None = None,
    *,
    clear_input: bool = False,
) -> bool:
    extra: dict[str, object] = {}
    if clear_input:
        # Results are all stored: the upload (up to JOB_MAX_UPLOAD_BYTES) is not needed again.
        extra["input_data"] = b""
    if result is not None:
        extra["result"] = json.dumps(result, allow_nan=False, default=str)
    if state == SUCCEEDED and result is not None:
        extra["done"] = Job.total
    ended = db.session.execute(
        sa.update(Job)
        .where(_held(job_id, worker))
        .values(
            **extra,
            state=state,
            error=error,
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    db.session.commit()
    return bool(ended.rowcount == 1)  # type: ignore[attr-defined]


def release(job_id: str, worker: str) -> None:
    """Hand a job back to the queue (this process stops, or its model is not ready here)."""
    db.session.execute(
        sa.update(Job)
        .where(_held(job_id, worker))
        .values(state=QUEUED, lease_owner=None, lease_expires_at=None)
    )
    db.session.commit()

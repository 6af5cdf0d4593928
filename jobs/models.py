"""Tables of batch jobs. Schema changes go through migrations/."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import orm

from accounts.models import utcnow
from extensions import db


class Job(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "jobs"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(32), primary_key=True)
    # The principal that submitted it ("user:3", "key:7"): nobody else may see it.
    owner: orm.Mapped[str] = orm.mapped_column(sa.String(64), index=True)
    # "predict" (items through a model) or "optimize" (a new version from an existing one).
    kind: orm.Mapped[str] = orm.mapped_column(sa.String(16), default="predict")
    # What the kind needs beyond the columns (JSON), and what it produced (JSON).
    params: orm.Mapped[str | None] = orm.mapped_column(sa.Text, nullable=True)
    result: orm.Mapped[str | None] = orm.mapped_column(sa.Text, nullable=True)
    model: orm.Mapped[str] = orm.mapped_column(sa.String(128))
    # Chosen when the job is submitted, so every item is answered by the same version.
    version: orm.Mapped[int] = orm.mapped_column()
    route_reason: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    input_kind: orm.Mapped[str] = orm.mapped_column(sa.String(8))
    input_name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    input_bytes: orm.Mapped[int] = orm.mapped_column(sa.BigInteger)
    # Kept in the database, not on a local disk, so any replica can resume the job.
    input_data: orm.Mapped[bytes] = orm.mapped_column(
        sa.LargeBinary, deferred=True, deferred_raiseload=True
    )
    state: orm.Mapped[str] = orm.mapped_column(sa.String(16), index=True)
    total: orm.Mapped[int] = orm.mapped_column()
    done: orm.Mapped[int] = orm.mapped_column(default=0)
    failed: orm.Mapped[int] = orm.mapped_column(default=0)
    error: orm.Mapped[str | None] = orm.mapped_column(sa.Text, nullable=True)
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(
        sa.DateTime(timezone=True), default=utcnow
    )
    started_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )
    finished_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )
    # The process working on it, until when (Unix seconds): an expired lease is taken over,
    # which is how a job resumes after a restart or a crash.
    lease_owner: orm.Mapped[str | None] = orm.mapped_column(sa.String(96), nullable=True)
    lease_expires_at: orm.Mapped[float | None] = orm.mapped_column(sa.Float, nullable=True)


class JobResult(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "job_results"

    job_id: orm.Mapped[str] = orm.mapped_column(
        sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    index: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    row: orm.Mapped[str] = orm.mapped_column(sa.Text)  # ResultRow.to_dict() as JSON
    ok: orm.Mapped[bool] = orm.mapped_column()

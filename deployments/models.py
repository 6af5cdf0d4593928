"""Tables of the deployment state. Schema changes go through migrations/."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import orm

from accounts.models import utcnow
from extensions import db


class Deployment(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "deployments"

    model: orm.Mapped[str] = orm.mapped_column(sa.String(128), primary_key=True)
    revision: orm.Mapped[int] = orm.mapped_column()
    policy: orm.Mapped[str] = orm.mapped_column(sa.Text)  # TrafficPolicy.to_dict() as JSON
    updated_by: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    updated_at: orm.Mapped[dt.datetime] = orm.mapped_column(
        sa.DateTime(timezone=True), default=utcnow
    )


class AuditRecord(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "audit_log"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    at: orm.Mapped[dt.datetime] = orm.mapped_column(sa.DateTime(timezone=True), default=utcnow)
    actor: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    model: orm.Mapped[str] = orm.mapped_column(sa.String(128), index=True)
    action: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    revision: orm.Mapped[int] = orm.mapped_column()
    before: orm.Mapped[str | None] = orm.mapped_column(sa.Text, nullable=True)
    after: orm.Mapped[str] = orm.mapped_column(sa.Text)


class StatCounter(db.Model):  # type: ignore[name-defined,misc]
    """Experiment and shadow counters summed over every worker and replica."""

    __tablename__ = "stat_counters"

    model: orm.Mapped[str] = orm.mapped_column(sa.String(128), primary_key=True)
    experiment: orm.Mapped[str] = orm.mapped_column(sa.String(128), primary_key=True)
    variant: orm.Mapped[str] = orm.mapped_column(sa.String(64), primary_key=True)
    metric: orm.Mapped[str] = orm.mapped_column(sa.String(160), primary_key=True)
    value: orm.Mapped[int] = orm.mapped_column(sa.BigInteger, default=0)


class PredictionLog(db.Model):  # type: ignore[name-defined,misc]
    """Which variant answered an experiment request, so feedback can be matched to it."""

    __tablename__ = "prediction_log"

    request_id: orm.Mapped[str] = orm.mapped_column(sa.String(64), primary_key=True)
    model: orm.Mapped[str] = orm.mapped_column(sa.String(128), index=True)
    experiment: orm.Mapped[str] = orm.mapped_column(sa.String(128))
    variant: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    version: orm.Mapped[int] = orm.mapped_column()
    label: orm.Mapped[str | None] = orm.mapped_column(sa.String(128), nullable=True)
    at: orm.Mapped[dt.datetime] = orm.mapped_column(sa.DateTime(timezone=True), default=utcnow)


class Feedback(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "feedback"

    request_id: orm.Mapped[str] = orm.mapped_column(
        sa.ForeignKey("prediction_log.request_id"), primary_key=True
    )
    true_label: orm.Mapped[str | None] = orm.mapped_column(sa.String(128), nullable=True)
    correct: orm.Mapped[bool | None] = orm.mapped_column(nullable=True)
    reward: orm.Mapped[float | None] = orm.mapped_column(sa.Float, nullable=True)
    at: orm.Mapped[dt.datetime] = orm.mapped_column(sa.DateTime(timezone=True), default=utcnow)

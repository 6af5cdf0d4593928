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

"""Database tables for identities. The schema is managed by Alembic migrations (migrations/)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import orm

from extensions import db


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    username: orm.Mapped[str] = orm.mapped_column(sa.String(64), unique=True, index=True)
    password_hash: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    role: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    # Space-separated scopes such as "infer:*" or "infer:digits infer:iris".
    scopes: orm.Mapped[str] = orm.mapped_column(sa.String(1024), default="")
    disabled: orm.Mapped[bool] = orm.mapped_column(default=False)
    # Tokens issued before this instant are refused: set when the password changes, so a
    # stolen token or refresh token dies with the old password.
    tokens_valid_after: orm.Mapped[dt.datetime | None] = orm.mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(
        sa.DateTime(timezone=True), default=utcnow
    )


class ApiKey(db.Model):  # type: ignore[name-defined,misc]
    """An application's key. Only a SHA-256 of the secret is stored: the secret is random
    (256 bits), so a slow hash would add latency to every request and no security."""

    __tablename__ = "api_keys"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    prefix: orm.Mapped[str] = orm.mapped_column(sa.String(16), unique=True, index=True)
    secret_hash: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    role: orm.Mapped[str] = orm.mapped_column(sa.String(16), default="predictor")
    scopes: orm.Mapped[str] = orm.mapped_column(sa.String(1024), default="infer:*")
    rate_limit: orm.Mapped[str | None] = orm.mapped_column(sa.String(64), nullable=True)
    daily_quota: orm.Mapped[int | None] = orm.mapped_column(nullable=True)
    created_by: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    created_at: orm.Mapped[dt.datetime] = orm.mapped_column(
        sa.DateTime(timezone=True), default=utcnow
    )
    revoked_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )
    # Usage counters: updated with one UPDATE ... SET n = n + 1, so workers never lose counts.
    requests: orm.Mapped[int] = orm.mapped_column(default=0)
    items: orm.Mapped[int] = orm.mapped_column(default=0)
    errors: orm.Mapped[int] = orm.mapped_column(default=0)
    last_used_at: orm.Mapped[dt.datetime | None] = orm.mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )


class RevokedToken(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "revoked_tokens"

    jti: orm.Mapped[str] = orm.mapped_column(sa.String(64), primary_key=True)
    expires_at: orm.Mapped[dt.datetime] = orm.mapped_column(sa.DateTime(timezone=True))
    revoked_at: orm.Mapped[dt.datetime] = orm.mapped_column(
        sa.DateTime(timezone=True), default=utcnow
    )


class RateCounter(db.Model):  # type: ignore[name-defined,misc]
    """Fixed-window counters of the rate limiter when no Redis is configured."""

    __tablename__ = "rate_counters"

    key: orm.Mapped[str] = orm.mapped_column(sa.String(255), primary_key=True)
    count: orm.Mapped[int] = orm.mapped_column(default=0)
    expires_at: orm.Mapped[float] = orm.mapped_column(sa.Float, index=True)

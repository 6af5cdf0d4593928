"""A rate-limit storage for the `limits` library on the application's SQL database.

flask-limiter's in-memory storage counts per process: with N gunicorn workers a key limited to
L per minute would get N x L through. Redis fixes that across replicas (set
``RATELIMIT_STORAGE_URI=redis://...``); for the single-container default, which must be exact
too but needs nothing else running, counters live in the SQLite (or PostgreSQL) database every
worker already shares. Each hit is one atomic upsert, so concurrent workers never lose counts.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from limits.storage import Storage

_UPSERT = sa.text(
    """
    INSERT INTO rate_counters (key, count, expires_at) VALUES (:key, :amount, :expires)
    ON CONFLICT (key) DO UPDATE SET
        count = CASE WHEN rate_counters.expires_at <= :now
                     THEN :amount ELSE rate_counters.count + :amount END,
        expires_at = CASE WHEN rate_counters.expires_at <= :now
                          THEN :expires ELSE rate_counters.expires_at END
    RETURNING count
    """
)


def sqlite_pragmas(connection: Any, _record: Any) -> None:
    """WAL lets readers proceed while one worker writes; the busy timeout makes writers queue
    instead of failing when several workers hit the same file. synchronous=NORMAL (safe with
    WAL: a crash of the process loses nothing, a power cut only the last commits) stops every
    commit from waiting on an fsync: rate-limit counters and usage commit on every request,
    and measured here that fsync was most of a small model's request time."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


class SQLStorage(Storage):
    """Fixed-window counters in the ``rate_counters`` table.

    The URI is ``sql+<SQLAlchemy URL>``, e.g. ``sql+sqlite:///instance/modelgate.db``.
    """

    STORAGE_SCHEME = ["sql+sqlite", "sql+postgresql", "sql+postgresql+psycopg"]  # noqa: RUF012

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        assert uri is not None
        url = uri.removeprefix("sql+")
        connect_args = {"timeout": 15} if url.startswith("sqlite") else {}
        sqlite = url.startswith("sqlite")
        # A ping per checkout guards against dropped server connections; a file has none.
        self._engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=not sqlite)
        if sqlite:
            sa.event.listen(self._engine, "connect", sqlite_pragmas)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sa.exc.SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self._engine.begin() as conn:
            row = conn.execute(
                _UPSERT, {"key": key, "amount": amount, "expires": now + expiry, "now": now}
            ).one()
        return int(row[0])

    def get(self, key: str) -> int:
        with self._engine.connect() as conn:
            value = conn.execute(
                sa.text("SELECT count FROM rate_counters WHERE key = :key AND expires_at > :now"),
                {"key": key, "now": time.time()},
            ).scalar()
        return int(value or 0)

    def get_expiry(self, key: str) -> float:
        with self._engine.connect() as conn:
            value = conn.execute(
                sa.text("SELECT expires_at FROM rate_counters WHERE key = :key"), {"key": key}
            ).scalar()
        return float(value) if value is not None else time.time()

    def check(self) -> bool:
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with self._engine.begin() as conn:
            return int(conn.execute(sa.text("DELETE FROM rate_counters")).rowcount)

    def clear(self, key: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM rate_counters WHERE key = :key"), {"key": key})

"""Per-API-key usage counters: requests, items, errors, last use."""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from flask import Flask, Response, g

from accounts.models import ApiKey
from extensions import db

log = logging.getLogger("modelgate.http")


def count_items(items: int) -> None:
    """Views that predict say how many items the request carried."""
    g.items = items


def _record(response: Response) -> Response:
    principal = g.get("principal")
    if principal is None or principal.kind != "key":
        return response
    try:
        # One UPDATE with increments: concurrent workers never overwrite each other's counts.
        db.session.execute(
            sa.update(ApiKey)
            .where(ApiKey.id == principal.id)
            .values(
                requests=ApiKey.requests + 1,
                items=ApiKey.items + int(g.get("items", 0)),
                errors=ApiKey.errors + (1 if response.status_code >= 400 else 0),
                last_used_at=dt.datetime.now(dt.UTC),
            )
        )
        db.session.commit()
    except sa.exc.SQLAlchemyError:
        # Usage is bookkeeping: losing one count must not fail a prediction that succeeded.
        db.session.rollback()
        log.warning("could not record API key usage", exc_info=True)
    return response


def init_usage(app: Flask) -> None:
    app.after_request(_record)

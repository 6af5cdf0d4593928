"""Keeps this process's traffic policies equal to the database's, within a second."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import sqlalchemy as sa
from flask import Flask

from deployments import stats, store
from extensions import db
from serving.service import InferenceService

log = logging.getLogger("modelgate.deploy")


def refresh(service: InferenceService) -> int:
    """Adopt every policy whose stored revision is newer than ours; returns how many."""
    known = {m.name for m in service.models()}
    adopted = 0
    for model, revision in store.revisions().items():
        if model in known and revision > service.policy(model).revision:
            adopted += service.apply_policy(model, store.current(model))
    return adopted


class PolicySync:
    """A daemon thread per process polling the revisions (one small query) every interval.

    Polling rather than notifications keeps SQLite and PostgreSQL alike; a failed poll keeps
    the last known state, so routing never depends on the database being up.
    """

    def __init__(self, app: Flask, service: InferenceService, interval_seconds: float) -> None:
        self._app = app
        self._service = service
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._failing = False

    def poll_once(self) -> None:
        with self._app.app_context():
            try:
                refresh(self._service)
                stats.flush(self._service)
                if self._failing:
                    log.info("deployment state reachable again")
                self._failing = False
            except (sa.exc.SQLAlchemyError, store.StateUnavailable):
                db.session.rollback()
                if not self._failing:
                    log.warning("cannot read deployment state; routing keeps the last known")
                self._failing = True
            finally:
                db.session.remove()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll_once()

    def start(self) -> None:
        threading.Thread(target=self._run, name="policy-sync", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def init_deployments(app: Flask, service: InferenceService, *, serving: bool) -> None:
    """Seed from models/routing.toml, load the current policies, start polling."""
    if not serving:
        return
    with app.app_context():
        try:
            store.seed(
                Path(app.config["MODEL_ROOT"]) / "routing.toml", {m.name for m in service.models()}
            )
            refresh(service)
        except sa.exc.SQLAlchemyError:
            db.session.rollback()
            log.warning("deployment state not loaded (has `flask db upgrade` run?)", exc_info=True)
    interval = float(app.config["DEPLOY_SYNC_INTERVAL_SECONDS"])
    if interval > 0:
        sync = PolicySync(app, service, interval)
        app.extensions["modelgate.policy_sync"] = sync
        sync.start()

"""The background runner every serving process starts: claims jobs and works through them.

A job is worked in chunks of its version's ``max_batch_size``; each chunk's results and the
renewed lease are committed together, so after a restart the job goes on from the first item
without a stored result (nothing is predicted twice into the results, nothing is skipped).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa
from flask import Flask

from extensions import db
from jobs import store
from jobs.models import Job
from jobs.tasks import Task, optimize_task
from serving.errors import InvalidInput, ModelNotReady, ServingError, VersionNotFound
from serving.jobs import JobInput, JobLimits, result_rows
from serving.registry import VersionState
from serving.service import InferenceService

log = logging.getLogger("modelgate.jobs")

DEFER_SECONDS = 5.0
# Nice value of the runner thread: the kernel schedules interactive request threads first.
BACKGROUND_NICENESS = 10


class JobRunner:
    def __init__(
        self,
        app: Flask,
        service: InferenceService,
        *,
        interval_seconds: float,
        lease_seconds: float,
        limits: JobLimits,
        tasks: dict[str, Task] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._app = app
        self._service = service
        self._interval = interval_seconds
        self._lease = lease_seconds
        self._limits = limits
        self._clock = clock
        self._tasks = tasks or {}
        # Jobs this process handed back (version not ready here), until when to leave them.
        self._deferred: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)

    def _loop(self) -> None:
        try:
            # Linux schedules threads individually, so this lowers only the runner's priority.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
        except (AttributeError, OSError):
            log.info("cannot lower the job runner's CPU priority on this system")
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("job runner failed; retrying")
                busy = False
            if not busy:
                self._stop.wait(self._interval)

    def run_once(self, max_chunks: int | None = None) -> bool:
        """Claim one job and work it until it ends, this process stops, or ``max_chunks``
        chunks are done (tests use that to stop half-way); False if no job was waiting or the
        one claimed had to be handed back (its version not ready here yet)."""
        with self._app.app_context():
            try:
                now = self._clock()
                self._deferred = {j: u for j, u in self._deferred.items() if u > now}
                job_id = store.claim(self.worker, now, self._lease, exclude=set(self._deferred))
                if job_id is None:
                    return False
                try:
                    return self._work(job_id, max_chunks)
                except Exception as err:
                    # Whatever it was, it would happen again on every retry: end the job.
                    log.exception("job failed unexpectedly", extra={"job": job_id})
                    db.session.rollback()
                    store.finish(
                        job_id,
                        self.worker,
                        store.FAILED,
                        f"the job failed unexpectedly ({type(err).__name__}); see the server log",
                    )
                    return True
            except sa.exc.SQLAlchemyError:
                db.session.rollback()
                log.warning("job state unreachable; will retry", exc_info=True)
                return False
            finally:
                db.session.remove()

    def _defer(self, job_id: str) -> bool:
        """Hand the job back and leave it to others (or to later) for a while."""
        store.release(job_id, self.worker)
        self._deferred[job_id] = self._clock() + DEFER_SECONDS
        return False

    def _work(self, job_id: str, max_chunks: int | None) -> bool:
        job = store.load_for_run(job_id)
        extra = {"job": job_id, "model": job.model, "version": job.version}
        if job.kind != "predict":
            self._run_task(job)
            return True
        try:
            found = self._service.model(job.model).versions.get(job.version)
            if found is None or found.state is VersionState.FAILED:
                raise VersionNotFound(
                    f"model '{job.model}' version {job.version} "
                    + ("is gone" if found is None else f"failed to load: {found.reason}")
                )
            target = self._service.version(job.model, job.version)
            job_input = JobInput(job.input_kind, job.input_data, self._limits)
        except ModelNotReady:
            log.info("job waits: its version is not ready in this process", extra=extra)
            return self._defer(job_id)
        except ServingError as err:
            store.finish(job_id, self.worker, store.FAILED, err.message, clear_input=True)
            return True
        assert target.spec is not None
        step = target.spec.max_batch_size
        position, chunks = job.done + job.failed, 0
        log.info("job started at item %d of %d", position, job.total, extra=extra)
        while position < job_input.total:
            if self._stop.is_set() or (max_chunks is not None and chunks >= max_chunks):
                if self._stop.is_set():
                    store.release(job_id, self.worker)
                return True
            items = job_input.items(position, position + step)
            readable = [i for i in items if i.error is None]
            try:
                predicted = iter(
                    self._service.predict_background(
                        job.model, job.version, [i.payload for i in readable]
                    )
                    if readable
                    else []
                )
            except ModelNotReady:
                return self._defer(job_id)
            except ServingError as err:
                store.finish(job_id, self.worker, store.FAILED, err.message, clear_input=True)
                return True
            answers = [next(predicted) if i.error is None else InvalidInput(i.error) for i in items]
            rows = result_rows(items, job.version, answers)
            if not store.save_chunk(job_id, self.worker, rows, self._clock(), self._lease):
                log.info("job cancelled or taken over; stopping", extra=extra)
                return True
            position += len(items)
            chunks += 1
        store.finish(job_id, self.worker, store.SUCCEEDED, clear_input=True)
        log.info("job finished", extra=extra)
        return True

    def _run_task(self, job: Job) -> None:
        task = self._tasks.get(job.kind)
        if task is None:
            store.finish(job.id, self.worker, store.FAILED, f"unknown job kind '{job.kind}'")
            return
        percent = [0]
        lost = threading.Event()
        stop = threading.Event()

        def progress(stage: str, fraction: float) -> None:
            # Raising here stops the task at its next stage, before it publishes anything.
            if lost.is_set():
                raise JobLost(f"job {job.id} was cancelled or taken over")
            percent[0] = max(percent[0], min(99, int(fraction * 100)))
            log.info("job %s: %s", job.id, stage, extra={"job": job.id, "model": job.model})

        def heartbeat() -> None:
            # A task makes no per-chunk commits, so its lease is renewed on the side.
            while not stop.wait(self._lease / 3):
                with self._app.app_context():
                    try:
                        held = store.renew(
                            job.id, self.worker, self._clock(), self._lease, percent[0]
                        )
                        if not held:
                            lost.set()
                            return
                    except sa.exc.SQLAlchemyError:
                        db.session.rollback()
                        log.warning("cannot renew the lease of job %s", job.id)
                    finally:
                        db.session.remove()

        beat = threading.Thread(target=heartbeat, name=f"job-heartbeat-{job.id[:8]}", daemon=True)
        beat.start()
        try:
            result = task(job, json.loads(job.params or "{}"), progress)
        except JobLost:
            log.info("job %s stopped: cancelled or taken over", job.id)
            return
        except ServingError as err:
            store.finish(
                job.id,
                self.worker,
                store.FAILED,
                err.message,
                result={"code": err.code, "details": err.details},
            )
            return
        finally:
            stop.set()
            beat.join()
        store.finish(job.id, self.worker, store.SUCCEEDED, result=result)


class JobLost(Exception):
    """This process no longer holds the job's lease (cancelled, or taken over)."""


def init_jobs(app: Flask, service: InferenceService, *, serving: bool) -> None:
    """Start this process's runner (when it serves models and polling is configured)."""
    limits = JobLimits(
        max_items=int(app.config["JOB_MAX_ITEMS"]),
        max_item_bytes=int(app.config["MAX_CONTENT_LENGTH"]),
        max_unpacked_bytes=int(app.config["JOB_MAX_UNPACKED_BYTES"]),
    )
    app.extensions["modelgate.job_limits"] = limits
    runner = JobRunner(
        app,
        service,
        interval_seconds=float(app.config["JOB_POLL_INTERVAL_SECONDS"]),
        lease_seconds=float(app.config["JOB_LEASE_SECONDS"]),
        limits=limits,
        tasks={"optimize": optimize_task(service)},
    )
    app.extensions["modelgate.job_runner"] = runner
    if serving and float(app.config["JOB_POLL_INTERVAL_SECONDS"]) > 0:
        runner.start()

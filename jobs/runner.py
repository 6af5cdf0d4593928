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
from serving.errors import ModelNotReady, ServingError
from serving.jobs import JobInput, JobLimits, result_rows
from serving.service import InferenceService

log = logging.getLogger("modelgate.jobs")

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
        chunks are done (tests use that to stop half-way); False if no job was waiting."""
        with self._app.app_context():
            try:
                job_id = store.claim(self.worker, self._clock(), self._lease)
                if job_id is None:
                    return False
                self._work(job_id, max_chunks)
                return True
            except sa.exc.SQLAlchemyError:
                db.session.rollback()
                log.warning("job state unreachable; will retry", exc_info=True)
                return False
            finally:
                db.session.remove()

    def _work(self, job_id: str, max_chunks: int | None) -> None:
        job = store.load_for_run(job_id)
        extra = {"job": job_id, "model": job.model, "version": job.version}
        if job.kind != "predict":
            self._run_task(job)
            return
        try:
            target = self._service.version(job.model, job.version)
            job_input = JobInput(job.input_kind, job.input_data, self._limits)
        except ModelNotReady:
            log.info("job waits: its version is not ready in this process", extra=extra)
            store.release(job_id, self.worker)
            return
        except ServingError as err:
            store.finish(job_id, self.worker, store.FAILED, err.message)
            return
        assert target.spec is not None
        step = target.spec.max_batch_size
        position, chunks = job.done + job.failed, 0
        log.info("job started at item %d of %d", position, job.total, extra=extra)
        while position < job_input.total:
            if self._stop.is_set() or (max_chunks is not None and chunks >= max_chunks):
                if self._stop.is_set():
                    store.release(job_id, self.worker)
                return
            items = job_input.items(position, position + step)
            try:
                answers = self._service.predict_background(
                    job.model, job.version, [i.payload for i in items]
                )
            except ModelNotReady:
                store.release(job_id, self.worker)
                return
            except ServingError as err:
                store.finish(job_id, self.worker, store.FAILED, err.message)
                return
            rows = result_rows(items, job.version, answers)
            if not store.save_chunk(job_id, self.worker, rows, self._clock(), self._lease):
                log.info("job cancelled or taken over; stopping", extra=extra)
                return
            position += len(items)
            chunks += 1
        store.finish(job_id, self.worker, store.SUCCEEDED)
        log.info("job finished", extra=extra)

    def _run_task(self, job: Job) -> None:
        task = self._tasks.get(job.kind)
        if task is None:
            store.finish(job.id, self.worker, store.FAILED, f"unknown job kind '{job.kind}'")
            return
        percent = [0]
        stop = threading.Event()

        def progress(stage: str, fraction: float) -> None:
            percent[0] = max(percent[0], min(99, int(fraction * 100)))
            log.info("job %s: %s", job.id, stage, extra={"job": job.id, "model": job.model})

        def heartbeat() -> None:
            # A task makes no per-chunk commits, so its lease is renewed on the side.
            while not stop.wait(self._lease / 3):
                with self._app.app_context():
                    try:
                        store.renew(job.id, self.worker, self._clock(), self._lease, percent[0])
                    except sa.exc.SQLAlchemyError:
                        db.session.rollback()
                        log.warning("cannot renew the lease of job %s", job.id)
                    finally:
                        db.session.remove()

        beat = threading.Thread(target=heartbeat, name=f"job-heartbeat-{job.id[:8]}", daemon=True)
        beat.start()
        try:
            result = task(job, json.loads(job.params or "{}"), progress)
        except ServingError as err:
            stop.set()
            beat.join()
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


def init_jobs(app: Flask, service: InferenceService, *, serving: bool) -> JobRunner | None:
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
    return runner

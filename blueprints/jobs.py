"""Batch jobs: submit a zip of images or a JSONL file, watch progress, download results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, request, stream_with_context, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from accounts.auth import current_principal, requires
from accounts.usage import count_items
from blueprints.errors import ErrorSchema, Forbidden
from blueprints.schemas import JobResultsQuerySchema, JobSchema
from blueprints.traffic import route_request
from extensions import inference_service
from jobs import store
from jobs.models import Job
from serving.errors import InvalidInput
from serving.jobs import JobInput, csv_header, csv_line

blp = Blueprint(
    "jobs",
    __name__,
    url_prefix="/api/jobs",
    description="Batch jobs: many items through a model in the background, results to download.",
)


def _owner() -> str:
    principal = current_principal()
    assert principal is not None  # @requires let the call through
    return principal.limit_key


def describe(job: Job) -> dict[str, Any]:
    processed = job.done + job.failed
    return {
        "id": job.id,
        "kind": job.kind,
        "model": job.model,
        "version": job.version,
        "route_reason": job.route_reason,
        "state": job.state,
        "input": {"kind": job.input_kind, "name": job.input_name, "bytes": job.input_bytes},
        "progress": {
            "total": job.total,
            "done": job.done,
            "failed": job.failed,
            "percent": round(100 * processed / job.total, 1) if job.total else 100.0,
        },
        "error": job.error,
        "params": json.loads(job.params) if job.params else None,
        "result": json.loads(job.result) if job.result else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "links": {"self": url_for("jobs.OneJob", job_id=job.id)}
        | (
            {
                "results_jsonl": url_for("jobs.JobResults", job_id=job.id, format="jsonl"),
                "results_csv": url_for("jobs.JobResults", job_id=job.id, format="csv"),
            }
            if job.kind == "predict"
            else {}
        ),
    }


_SUBMIT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["model", "file"],
                "properties": {
                    "model": {"type": "string", "description": "The model to run"},
                    "version": {"type": "integer", "description": "Pin a version"},
                    "label": {"type": "string", "description": "Or a label (stable, canary)"},
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "A .zip of PNG/JPEG/WebP images, or a .jsonl file with "
                        "one instance per line (named features, a tensor row, or {'b64': ...})",
                    },
                },
            }
        }
    },
}


@blp.route("")
class Jobs(MethodView):
    @requires("infer")
    @blp.doc(requestBody=_SUBMIT_BODY)
    @blp.response(202, JobSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="Unknown model or version")
    @blp.alt_response(413, schema=ErrorSchema, description="File too large or too many items")
    @blp.alt_response(422, schema=ErrorSchema, description="Not a readable zip or JSONL file")
    @blp.alt_response(503, schema=ErrorSchema, description="Model not ready")
    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Submit a batch job

        The version is chosen now (pinned, by label, or by the model's traffic policy) and
        answers every item. The job runs in the background at lower priority than
        interactive requests; poll its `links.self` for progress. At most
        `JOB_MAX_ACTIVE_PER_OWNER` of your jobs may be queued or running at once.
        """
        config = current_app.config
        request.max_content_length = config["JOB_MAX_UPLOAD_BYTES"]
        model = request.form.get("model", "").strip()
        upload = request.files.get("file")
        if not model or upload is None:
            raise InvalidInput("send the multipart fields 'model' and 'file'")
        principal = current_principal()
        assert principal is not None
        if not principal.may_infer(model):
            raise Forbidden(f"no scope allows inference on '{model}'")
        version_text = request.form.get("version", "").strip()
        if version_text and not version_text.isdecimal():
            raise InvalidInput("'version' must be a version number")
        service = inference_service()
        if model in service.ensembles:
            raise InvalidInput("batch jobs run models, not ensembles", details={"model": model})
        route = route_request(
            model, int(version_text) if version_text else None, request.form.get("label") or None
        )
        target, chosen = service.route(model, route)
        data = upload.read()
        job_input = JobInput(
            JobInput.kind_of(upload.filename or "", upload.mimetype),
            data,
            current_app.extensions["modelgate.job_limits"],
        )
        count_items(job_input.total)
        job = store.create(
            owner=principal.limit_key,
            model=model,
            version=target.version,
            route_reason=chosen.reason,
            job_input=job_input,
            input_name=upload.filename or "upload",
            data=data,
            max_active=int(config["JOB_MAX_ACTIVE_PER_OWNER"]),
        )
        body = describe(job)
        return body, 202, {"Location": body["links"]["self"]}

    @requires("infer")
    @blp.response(200, JobSchema(many=True))
    def get(self) -> list[dict[str, Any]]:
        """Your batch jobs, newest first"""
        return [describe(job) for job in store.list_for(_owner())]


@blp.route("/<job_id>")
class OneJob(MethodView):
    @requires("infer")
    @blp.response(200, JobSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such job of yours")
    def get(self, job_id: str) -> dict[str, Any]:
        """State and progress of one of your jobs"""
        return describe(store.get(_owner(), job_id))

    @requires("infer")
    @blp.response(200, JobSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such job of yours")
    @blp.alt_response(409, schema=ErrorSchema, description="The job has already ended")
    def delete(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (results so far stay downloadable)"""
        return describe(store.cancel(_owner(), job_id))


@blp.route("/<job_id>/results")
class JobResults(MethodView):
    @requires("infer")
    @blp.arguments(JobResultsQuerySchema, location="query")
    @blp.response(
        200,
        description="One line per item in input order (partial while the job runs)",
        content_type="application/jsonl",
    )
    @blp.alt_response(404, schema=ErrorSchema, description="No such job of yours")
    def get(self, query: dict[str, str], job_id: str) -> Response:
        """Download the results as JSONL or CSV

        Each row: index, name (zip member or JSONL line), version, label, score, top_k, or
        the error that item hit. `X-Job-State` says whether the job is still running.
        """
        job = store.get(_owner(), job_id)
        fmt = query.get("format", "jsonl")
        rows = store.results(job.id)

        def jsonl() -> Iterator[str]:
            for row in rows:
                yield json.dumps(row, allow_nan=False) + "\n"

        def csv() -> Iterator[str]:
            yield csv_header()
            for row in rows:
                yield csv_line(row)

        body = jsonl() if fmt == "jsonl" else csv()
        mimetype = "application/jsonl" if fmt == "jsonl" else "text/csv"
        return Response(
            stream_with_context(body),
            mimetype=mimetype,
            headers={
                "Content-Disposition": f'attachment; filename="job-{job.id}.{fmt}"',
                "X-Job-State": job.state,
            },
        )

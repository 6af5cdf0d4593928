"""Deployment operations (role deployer): labels, promote, rollback, canary, experiment,
shadow, and the audit log. Each change is one revision; send the ETag back as If-Match."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import marshmallow as ma
from flask import current_app, g, request
from flask.views import MethodView
from flask_smorest import Blueprint

from accounts.auth import current_principal, requires
from blueprints.errors import Conflict, ErrorSchema
from blueprints.jobs import describe as describe_job
from blueprints.schemas import JobSchema, UtcDateTime, VersionSchema
from deployments import stats as experiment_stats
from deployments import store
from extensions import inference_service
from jobs import store as jobs_store
from serving import routing
from serving.archive import install_version
from serving.errors import InvalidInput, VersionNotFound
from serving.optimize.convert import MODES
from serving.registry import VersionState, describe_version
from serving.routing import STABLE, Experiment, Shadow, TrafficPolicy, Variant

blp = Blueprint(
    "deploy", __name__, url_prefix="/api", description="Versions and traffic (role deployer)."
)


class PolicySchema(ma.Schema):
    revision = ma.fields.Integer(dump_only=True)
    labels = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    weights = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Float(),
        metadata={"description": "Percent of traffic per version; adds up to 100"},
    )
    experiment = ma.fields.Dict(allow_none=True)
    shadow = ma.fields.Dict(allow_none=True)
    history = ma.fields.List(ma.fields.Integer(), dump_only=True)
    version_policy = ma.fields.Dict(
        allow_none=True,
        metadata={
            "description": 'Versions loaded: {"policy": "all"}, {"policy": "latest", "count": N} '
            'or {"policy": "specific", "versions": [...]}; null: the model.toml\'s'
        },
    )


class VersionBodySchema(ma.Schema):
    version = ma.fields.Integer(required=True, validate=ma.validate.Range(1))


class CanarySchema(VersionBodySchema):
    percent = ma.fields.Float(required=True, validate=ma.validate.Range(0, 100))


class VariantSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 32))
    version = ma.fields.Integer(required=True)
    weight = ma.fields.Float(required=True, validate=ma.validate.Range(0, 100))


class ExperimentSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 64))
    sticky = ma.fields.String(load_default="subject")
    variants = ma.fields.List(ma.fields.Nested(VariantSchema), required=True)


class ShadowSchema(VersionBodySchema):
    percent = ma.fields.Float(
        required=True, validate=ma.validate.Range(0, 100, min_inclusive=False)
    )


class AuditSchema(ma.Schema):
    id = ma.fields.Integer()
    at = UtcDateTime()
    actor = ma.fields.String()
    model = ma.fields.String()
    action = ma.fields.String()
    revision = ma.fields.Integer()
    before = ma.fields.Function(lambda r: json.loads(r.before) if r.before else None)
    after = ma.fields.Function(lambda r: json.loads(r.after))


class AuditQuerySchema(ma.Schema):
    model = ma.fields.String()
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(1, 1000))


def _if_match() -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    try:
        return int(raw.strip().strip('"').removeprefix("W/").strip('"'))
    except ValueError as err:
        raise InvalidInput("If-Match must be the ETag of GET .../deployment") from err


def _require_ready(model: str, version: int) -> None:
    found = inference_service().model(model).versions.get(version)
    if found is None or found.state is not VersionState.READY:
        state = found.state if found else "absent"
        raise Conflict(
            f"version {version} of '{model}' is {state}; only a READY version takes traffic",
            details={"version": version, "state": str(state)},
        )


def _commit(model: str, action: str, edit: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
    inference_service().model(model)  # 404 for an unknown model
    policy = store.change(model, action, g.principal.name, edit, _if_match())
    inference_service().apply_policy(model, policy)
    return policy.to_dict(), 200, {"ETag": f'"{policy.revision}"'}


def _edit(policy: TrafficPolicy, **changes: Any) -> TrafficPolicy:
    return dataclasses.replace(policy, **changes)


_WRITE_ERRORS = {
    404: "Unknown model",
    409: "The version is not READY",
    412: "If-Match is not the current revision",
    503: "The deployment state cannot be written now (predictions continue)",
}


def _document(view: Any) -> Any:
    for status, description in _WRITE_ERRORS.items():
        view = blp.alt_response(status, schema=ErrorSchema, description=description)(view)
    return view


@blp.route("/models/<name>/deployment")
class DeploymentState(MethodView):
    @requires("models:read")
    @blp.response(200, PolicySchema)
    def get(self, name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Traffic policy of a model

        Labels, weights, experiment, shadow and the revision (also the ETag).
        """
        inference_service().model(name)
        policy = store.current(name)
        return policy.to_dict(), 200, {"ETag": f'"{policy.revision}"'}

    @requires("deploy")
    @blp.arguments(PolicySchema)
    @blp.response(200, PolicySchema)
    @_document
    def put(self, body: dict[str, Any], name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Replace the traffic policy

        Every version that a label, weight or variant names must be READY.
        """
        declared = TrafficPolicy.from_dict(body)
        for version in declared.versions_in_use():
            _require_ready(name, version)
        return _commit(name, "replace", lambda before: _edit(declared, history=before.history))


@blp.route("/models/<name>/promote")
class Promote(MethodView):
    @requires("deploy")
    @blp.arguments(VersionBodySchema)
    @blp.response(200, PolicySchema)
    @_document
    def post(self, body: dict[str, int], name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Blue-green: move the stable label to a version

        One atomic step: all traffic goes to the new stable version (weights and the canary
        label are cleared); the previous stable is remembered for rollback.
        """
        version = body["version"]
        _require_ready(name, version)

        return _commit(name, "promote", lambda before: routing.promote(before, version))


@blp.route("/models/<name>/rollback")
class Rollback(MethodView):
    @requires("deploy")
    @blp.response(200, PolicySchema)
    @_document
    def post(self, name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Roll back to the previous stable version, in one call"""

        def back(before: TrafficPolicy) -> TrafficPolicy:
            after = routing.rollback(before)
            _require_ready(name, after.labels[STABLE])
            return after

        return _commit(name, "rollback", back)


@blp.route("/models/<name>/canary")
class Canary(MethodView):
    @requires("deploy")
    @blp.arguments(CanarySchema)
    @blp.response(200, PolicySchema)
    @_document
    def put(self, body: dict[str, Any], name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Send a share of traffic to a version

        The rest goes to the stable version. 0 % is a dark launch: the version is labelled
        canary and reachable through /labels/canary/, but gets no routed traffic.
        """
        version, percent = body["version"], body["percent"]
        _require_ready(name, version)

        return _commit(name, "canary", lambda before: routing.canary(before, version, percent))

    @requires("deploy")
    @blp.response(200, PolicySchema)
    @_document
    def delete(self, name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """End the canary: all traffic back to stable"""

        return _commit(name, "canary-end", routing.end_canary)


@blp.route("/models/<name>/experiment")
class ExperimentView(MethodView):
    @requires("deploy")
    @blp.arguments(ExperimentSchema)
    @blp.response(200, PolicySchema)
    @_document
    def put(self, body: dict[str, Any], name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Start an A/B experiment

        Variants with weights; `sticky` is `subject` (the caller), `api_key`, or
        `header:<Name>`, so one caller keeps its variant on every worker and replica.
        """
        experiment = Experiment(
            name=body["name"],
            sticky=body["sticky"],
            variants=tuple(Variant(v["name"], v["version"], v["weight"]) for v in body["variants"]),
        )
        for variant in experiment.variants:
            _require_ready(name, variant.version)
        return _commit(
            name, "experiment-start", lambda before: _edit(before, experiment=experiment)
        )

    @requires("deploy")
    @blp.response(200, PolicySchema)
    @_document
    def delete(self, name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Stop the experiment"""
        return _commit(name, "experiment-stop", lambda before: _edit(before, experiment=None))


@blp.route("/models/<name>/shadow")
class ShadowView(MethodView):
    @requires("deploy")
    @blp.arguments(ShadowSchema)
    @blp.response(200, PolicySchema)
    @_document
    def put(self, body: dict[str, Any], name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Mirror a share of requests to a shadow version (its answers are never returned)"""
        _require_ready(name, body["version"])
        shadow = Shadow(version=body["version"], percent=body["percent"])
        return _commit(name, "shadow-start", lambda before: _edit(before, shadow=shadow))

    @requires("deploy")
    @blp.response(200, PolicySchema)
    @_document
    def delete(self, name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Stop shadowing"""
        return _commit(name, "shadow-stop", lambda before: _edit(before, shadow=None))


@blp.route("/audit")
class Audit(MethodView):
    @requires("deploy")
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditSchema(many=True))
    def get(self, query: dict[str, Any]) -> list[Any]:
        """The audit log: who changed which deployment, when, from what to what"""
        return store.audit(query.get("model"), query["limit"])


class FeedbackSchema(ma.Schema):
    request_id = ma.fields.String(required=True, validate=ma.validate.Length(1, 64))
    label = ma.fields.String(validate=ma.validate.Length(1, 128))
    reward = ma.fields.Float(allow_nan=False)


class FeedbackAnswerSchema(ma.Schema):
    request_id = ma.fields.String()
    variant = ma.fields.String()
    correct = ma.fields.Boolean(allow_none=True)


class ReportSchema(ma.Schema):
    model = ma.fields.String()
    experiment = ma.fields.String(allow_none=True)
    variants = ma.fields.Dict()
    comparison = ma.fields.Dict(allow_none=True)
    shadows = ma.fields.Dict()


class ReportQuerySchema(ma.Schema):
    experiment = ma.fields.String(metadata={"description": "Defaults to the running experiment"})


@blp.route("/feedback")
class FeedbackView(MethodView):
    @requires("infer")
    @blp.arguments(FeedbackSchema)
    @blp.response(201, FeedbackAnswerSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No experiment request with that id")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Feedback on an experiment's answer

        The `request_id` of the prediction (its `X-Request-ID`) and the true `label` or a
        `reward`; the experiment report turns these into per-variant accuracy.
        """
        experiment_stats.flush(inference_service())
        return experiment_stats.add_feedback(
            body["request_id"], body.get("label"), body.get("reward")
        )


@blp.route("/models/<name>/experiment/report")
class ExperimentReport(MethodView):
    @requires("models:read")
    @blp.arguments(ReportQuerySchema, location="query")
    @blp.response(200, ReportSchema)
    def get(self, query: dict[str, Any], name: str) -> dict[str, Any]:
        """Experiment and shadow report

        Per variant over every worker and replica: requests, errors, latency percentiles,
        predicted labels, feedback accuracy with a 95 % Wilson interval, and a two-proportion
        z-test between the first two variants; per shadow: top-1 agreement and score gap.
        """
        service = inference_service()
        experiment = query.get("experiment")
        if experiment is None and service.policy(name).experiment is not None:
            experiment = service.policy(name).experiment.name  # type: ignore[union-attr]
        experiment_stats.flush(service)
        return experiment_stats.report(name, experiment)


@blp.route("/models/<name>/versions")
class UploadVersion(MethodView):
    @requires("admin")
    @blp.doc(
        requestBody={
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"archive": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    )
    @blp.response(201, VersionSchema)
    @blp.alt_response(413, schema=ErrorSchema, description="Archive too large")
    @blp.alt_response(422, schema=ErrorSchema, description="Not a valid version archive")
    def post(self, name: str) -> dict[str, object]:
        """Upload a new version

        A zip or tar archive holding `manifest.toml` and the artifact. It is unpacked in a
        hidden directory (no path traversal, links or devices, size bounded), its manifest
        validated, then moved into place as the next version number in one rename, loaded,
        warmed up and self-tested. It gets traffic only once READY and a policy sends it some.
        """
        request.max_content_length = current_app.config["MAX_ARCHIVE_BYTES"]
        upload = request.files.get("archive")
        if upload is None:
            raise InvalidInput("send the archive as the multipart field 'archive'")
        service = inference_service()
        number = install_version(
            service.settings.model_root,
            name,
            upload.read(),
            upload.filename or "archive",
            max_unpacked_bytes=current_app.config["MAX_ARCHIVE_BYTES"],
        )
        service.rescan()
        return describe_version(service.model(name).versions[number])


class OptimizeSchema(ma.Schema):
    from_version = ma.fields.Integer(
        required=True, metadata={"description": "The SavedModel version to optimize"}
    )
    mode = ma.fields.String(required=True, validate=ma.validate.OneOf(MODES))
    max_accuracy_drop = ma.fields.Float(
        load_default=0.01,
        validate=ma.validate.Range(0, 1),
        metadata={"description": "Largest holdout accuracy loss, a fraction (0.01 = 1 point)"},
    )
    canary_percent = ma.fields.Float(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Range(0, 100),
        metadata={"description": "Give the new version this share of traffic once it passes"},
    )


@blp.route("/models/<name>/optimize")
class Optimize(MethodView):
    @requires("admin")
    @blp.arguments(OptimizeSchema)
    @blp.response(202, JobSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="Unknown model or version")
    def post(self, body: dict[str, Any], name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Optimize a version in the background (float16, dynamic or int8)

        Runs `flask models optimize` as a job: converts the version to TFLite without
        training-only ops, quantizes it, measures source and result on the model's declared
        holdout set and publishes a new version only if the accuracy drop is within
        `max_accuracy_drop`; with `canary_percent` it then gets that share of traffic. Poll
        the job (`links.self`): on success its `result` holds the new version and the
        figures; on refusal its `error` says why and nothing was written.
        """
        service = inference_service()
        model = service.model(name)
        if body["from_version"] not in model.versions:
            raise VersionNotFound(
                f"model '{name}' has no version {body['from_version']}", details={"model": name}
            )
        principal = current_principal()
        assert principal is not None
        job = jobs_store.create_task(
            owner=principal.limit_key,
            kind="optimize",
            model=name,
            version=body["from_version"],
            params=body,
        )
        answer = describe_job(job)
        return answer, 202, {"Location": answer["links"]["self"]}

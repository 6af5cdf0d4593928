"""ModelGate's own REST API: model metadata and labelled predictions."""

from __future__ import annotations

import base64
from typing import Any

from flask import Response, g
from flask.views import MethodView
from flask_smorest import Blueprint

from accounts.auth import requires
from accounts.usage import count_items
from blueprints.errors import ErrorSchema
from blueprints.io import predict_items
from blueprints.schemas import PREDICT_REQUEST_BODY, ModelSchema, PredictResponseSchema
from blueprints.traffic import route_headers, route_request
from extensions import inference_service
from serving.artifacts import artifact_of
from serving.errors import VersionNotFound
from serving.registry import describe_model
from serving.service import PredictResult

blp = Blueprint(
    "models",
    __name__,
    url_prefix="/api/models",
    description="Models, their versions, and predictions with labels.",
)

_PREDICT_ERRORS = {
    404: "Unknown model or version",
    413: "Body too large",
    415: "Not a supported image or content type",
    422: "Input does not fit the model (the message names the input)",
    503: "Model or version not ready",
}


def _predict(
    name: str, version: int | None = None, label: str | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    items = predict_items()
    count_items(len(items))
    service = inference_service()
    if name in service.ensembles and version is None and label is None:
        ensemble = service.predict_ensemble(name, items)
        return (
            {
                "model": name,
                "combine": ensemble.combine,
                "request_id": g.get("request_id"),
                "predictions": [p.to_dict() for p in ensemble.predictions],
                "members": [
                    {
                        "model": m.model,
                        "version": m.version,
                        "predictions": [p.to_dict() for p in m.predictions],
                    }
                    for m in ensemble.members
                ],
            },
            200,
            {"X-Route-Reason": "ensemble"},
        )
    result: PredictResult = inference_service().predict(
        name, items, route=route_request(name, version, label), request_id=g.get("request_id")
    )
    body = {
        "model": result.model,
        "version": result.version,
        "route_reason": result.reason,
        "request_id": g.get("request_id"),
        "predictions": [p.to_dict() for p in result.predictions],
    }
    return body, 200, route_headers(result.version, result.reason, result.variant)


def _document_errors(view: Any) -> Any:
    for status, description in _PREDICT_ERRORS.items():
        view = blp.alt_response(status, schema=ErrorSchema, description=description)(view)
    return view


@blp.route("")
class Models(MethodView):
    @requires("models:read")
    @blp.response(200, ModelSchema(many=True))
    def get(self) -> list[dict[str, object]]:
        """List models

        Every model with its versions, their state (LOADING, READY, FAILED and why),
        signature, labels and provenance.
        """
        service = inference_service()
        ensembles = [
            {**spec.to_dict(), "ready": service.ensemble_ready(name), "versions": []}
            for name, spec in service.ensembles.items()
        ]
        return [describe_model(m) for m in service.models()] + ensembles


@blp.route("/<name>")
class ModelDetail(MethodView):
    @requires("models:read")
    @blp.response(200, ModelSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="Unknown model")
    def get(self, name: str) -> dict[str, object]:
        """Describe a model

        Versions, state, signature, pre- and post-processing, labels and provenance.
        """
        return describe_model(inference_service().model(name))


@blp.route("/<name>/predict")
class Predict(MethodView):
    @requires("infer")
    @blp.doc(requestBody=PREDICT_REQUEST_BODY)
    @blp.response(
        200,
        PredictResponseSchema,
        headers={
            "X-Model-Version": {
                "description": "The version that answered",
                "schema": {"type": "string"},
            }
        },
    )
    @_document_errors
    def post(self, name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Predict, routed by the model's traffic policy

        The experiment (sticky per caller), the canary weights, the stable label, else the
        newest ready version answers; `X-Model-Version` and `X-Route-Reason` say which and
        why. Upload one or several images, or send JSON instances. Every item is pre-processed
        as the version declares, the items run as one batch, and each answer gives the top
        label, its score and the top-k.
        """
        return _predict(name)


@blp.route("/<name>/versions/<int:version>/predict")
class PredictVersion(MethodView):
    @requires("infer")
    @blp.doc(requestBody=PREDICT_REQUEST_BODY)
    @blp.response(200, PredictResponseSchema)
    @_document_errors
    def post(self, name: str, version: int) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Predict with a pinned version

        Same as predicting with the model, but only the given version answers.
        """
        return _predict(name, version=version)


@blp.route("/<name>/labels/<label>/predict")
class PredictLabel(MethodView):
    @requires("infer")
    @blp.doc(requestBody=PREDICT_REQUEST_BODY)
    @blp.response(200, PredictResponseSchema)
    @_document_errors
    def post(self, name: str, label: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Predict with the version a label points at (stable, canary, ...)"""
        return _predict(name, label=label)


@blp.route("/<name>/versions/<int:version>/artifact")
class VersionArtifact(MethodView):
    @requires("infer")
    @blp.response(
        200,
        description="The artifact: a .tflite file as served, or a SavedModel directory as zip",
        content_type="application/octet-stream",
    )
    @blp.alt_response(404, schema=ErrorSchema, description="Unknown model or version")
    def get(self, name: str, version: int) -> Response:
        """Download a version's artifact for on-device use

        Whoever may run the model may take it: the same `infer` permission and model scope.
        `X-Artifact-SHA256` (hex) and `Repr-Digest` (RFC 9530) carry its SHA-256; the bytes
        of a version never change, so the digest is stable across downloads and replicas.
        """
        model = inference_service().model(name)
        found = model.versions.get(version)
        if found is None:
            raise VersionNotFound(
                f"model '{name}' has no version {version}", details={"model": name}
            )
        artifact = artifact_of(found)
        digest = bytes.fromhex(artifact.sha256)
        return Response(
            artifact.data,
            mimetype=artifact.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{artifact.filename}"',
                "X-Artifact-SHA256": digest.hex(),
                "Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
                "X-Model-Version": str(version),
            },
        )

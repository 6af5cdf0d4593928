"""Open Inference Protocol v2 over REST (the API KServe, Triton and MLServer share)."""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint

from accounts.auth import public, requires
from blueprints.errors import ErrorSchema
from blueprints.io import read_v2_body
from blueprints.schemas import (
    LiveSchema,
    ReadySchema,
    V2InferRequestSchema,
    V2InferResponseSchema,
    V2ModelMetadataSchema,
    V2ServerMetadataSchema,
    V2StatsSchema,
)
from blueprints.traffic import route_headers, route_request
from extensions import inference_service
from serving.errors import VersionNotFound
from serving.protocols import v2
from serving.registry import ModelVersion

SERVER_NAME = "modelgate"
SERVER_VERSION = "0.1.0"

blp = Blueprint(
    "v2",
    __name__,
    url_prefix="/v2",
    description="Open Inference Protocol v2: health, metadata and tensor inference.",
)


def _version_number(name: str, version: str | None) -> int | None:
    if version is None:
        return None
    if not version.isdigit():
        raise VersionNotFound(f"model '{name}' has no version '{version}'", details={"model": name})
    return int(version)


def _metadata(name: str, target: ModelVersion) -> dict[str, Any]:
    assert target.spec is not None
    model = inference_service().model(name)
    return {
        "name": name,
        "versions": [str(v) for v in sorted(model.versions)],
        "platform": target.spec.runtime,
        "inputs": [t.to_dict() for t in target.spec.inputs],
        "outputs": [t.to_dict() for t in target.spec.outputs],
    }


def _ensemble_metadata(name: str) -> dict[str, Any]:
    service = inference_service()
    spec = service.ensembles[name]
    targets = service.ensemble_signature(name)
    assert targets[0].spec is not None
    classes = len(targets[0].postprocessor.labels) if targets[0].postprocessor else -1
    outputs = [{"name": "label", "datatype": "BYTES", "shape": [-1]}]
    if spec.combine == "average":
        outputs.append({"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]})
    else:
        outputs.append({"name": "score", "datatype": "FP32", "shape": [-1]})
    if spec.combine == "all":
        outputs += [
            {"name": f"{t.model}_v{t.version}", "datatype": "FP32", "shape": [-1, classes]}
            for t in targets
        ]
    return {
        "name": name,
        "versions": [],
        "platform": "ensemble",
        "inputs": [t.to_dict() for t in targets[0].spec.inputs],
        "outputs": outputs,
    }


def _ready(name: str, version: str | None) -> tuple[dict[str, Any], int]:
    service = inference_service()
    if name in service.ensembles and version is None:
        ready = service.ensemble_ready(name)
        return {"name": name, "ready": ready}, 200 if ready else 503
    number = _version_number(name, version)
    model = service.model(name)
    if number is None:
        ready = model.ready
    else:
        found = model.versions.get(number)
        if found is None:
            raise VersionNotFound(f"model '{name}' has no version {number}")
        ready = str(found.state) == "READY"
    return {"name": name, "ready": ready}, 200 if ready else 503


def _infer(
    name: str, version: str | None, label: str | None = None
) -> tuple[dict[str, Any], int, dict[str, str]] | Response:
    service = inference_service()
    if name in service.ensembles and version is None and label is None:
        service.ensemble_signature(name)  # 404/503/422 before parsing the body
        body, binary = read_v2_body()
        request = v2.decode_request(body, binary)
        result = service.infer_ensemble(name, request.inputs)
        headers = {"X-Route-Reason": "ensemble"}
    else:
        number = _version_number(name, version)
        route = route_request(name, number, label)
        service.route(name, route)  # 404/503 before parsing the body
        body, binary = read_v2_body()
        request = v2.decode_request(body, binary)
        result = service.infer(name, request.inputs, route=route)
        assert result.version is not None
        headers = route_headers(result.version, result.reason, result.variant)
    answer, binary_out = v2.encode_response(result, request)
    if binary_out:
        # Binary tensor data extension: the JSON header, then the raw output bytes.
        header = json.dumps(answer, allow_nan=False).encode()
        return Response(
            header + binary_out,
            content_type="application/octet-stream",
            headers={**headers, "Inference-Header-Content-Length": str(len(header))},
        )
    return answer, 200, headers


@blp.route("")
class Server(MethodView):
    @requires("models:read")
    @blp.response(200, V2ServerMetadataSchema)
    def get(self) -> dict[str, Any]:
        """Server metadata"""
        return {
            "name": SERVER_NAME,
            "version": SERVER_VERSION,
            "extensions": ["binary_tensor_data"],
        }


@blp.route("/health/live")
class Live(MethodView):
    @public
    @blp.response(200, LiveSchema)
    @blp.doc(security=[])
    def get(self) -> dict[str, bool]:
        """Liveness: the process answers"""
        return {"live": inference_service().live}


@blp.route("/health/ready")
class Ready(MethodView):
    @public
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, schema=ReadySchema, description="Models are still loading")
    @blp.doc(security=[])
    def get(self) -> tuple[dict[str, bool], int]:
        """Readiness: every model version has loaded (or failed) and one at least is ready"""
        ready = inference_service().ready
        return {"ready": ready}, 200 if ready else 503


@blp.route("/models/<name>")
class ModelMetadata(MethodView):
    @requires("models:read")
    @blp.response(200, V2ModelMetadataSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(503, schema=ErrorSchema)
    def get(self, name: str) -> dict[str, Any]:
        """Model metadata (the newest ready version's signature)

        For an ensemble: the members' shared inputs and the combined outputs.
        """
        if name in inference_service().ensembles:
            return _ensemble_metadata(name)
        return _metadata(name, inference_service().version(name))


@blp.route("/models/<name>/versions/<version>")
class VersionMetadata(MethodView):
    @requires("models:read")
    @blp.response(200, V2ModelMetadataSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(503, schema=ErrorSchema)
    def get(self, name: str, version: str) -> dict[str, Any]:
        """Model version metadata"""
        return _metadata(name, inference_service().version(name, _version_number(name, version)))


@blp.route("/models/<name>/ready")
class ModelReady(MethodView):
    @requires("models:read")
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, schema=ReadySchema, description="Not ready")
    @blp.alt_response(404, schema=ErrorSchema)
    def get(self, name: str) -> tuple[dict[str, Any], int]:
        """Model readiness"""
        return _ready(name, None)


@blp.route("/models/<name>/versions/<version>/ready")
class VersionReady(MethodView):
    @requires("models:read")
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, schema=ReadySchema, description="Not ready")
    @blp.alt_response(404, schema=ErrorSchema)
    def get(self, name: str, version: str) -> tuple[dict[str, Any], int]:
        """Model version readiness"""
        return _ready(name, version)


_INFER_ERRORS = {
    404: "Unknown model or version",
    413: "Body too large",
    422: "Tensors do not match the signature",
    503: "Not ready",
}


def _infer_doc(view: Any) -> Any:
    view = blp.doc(
        requestBody={
            "required": True,
            "description": "v2 inference request; the Content-Type header may be omitted.",
            "content": {"application/json": {"schema": V2InferRequestSchema}},
        }
    )(view)
    for status, description in _INFER_ERRORS.items():
        view = blp.alt_response(status, schema=ErrorSchema, description=description)(view)
    return view


@blp.route("/models/<name>/infer")
class Infer(MethodView):
    @requires("infer")
    @_infer_doc
    @blp.response(200, V2InferResponseSchema)
    def post(self, name: str) -> tuple[dict[str, Any], int, dict[str, str]] | Response:
        """Infer with the newest ready version

        JSON tensors in (name, shape, datatype, data), raw output tensors out. The request
        `id` is echoed and the `outputs` list, if given, filters the answer.
        """
        return _infer(name, None)


@blp.route("/models/<name>/versions/<version>/infer")
class InferVersion(MethodView):
    @requires("infer")
    @_infer_doc
    @blp.response(200, V2InferResponseSchema)
    def post(
        self, name: str, version: str
    ) -> tuple[dict[str, Any], int, dict[str, str]] | Response:
        """Infer with a pinned version"""
        return _infer(name, version)


@blp.route("/models/<name>/labels/<label>/infer")
class InferLabel(MethodView):
    @requires("infer")
    @_infer_doc
    @blp.response(200, V2InferResponseSchema)
    def post(self, name: str, label: str) -> tuple[dict[str, Any], int, dict[str, str]] | Response:
        """Infer with the version a label points at"""
        return _infer(name, None, label)


@blp.route("/models/<name>/stats")
class ModelStats(MethodView):
    @requires("models:read")
    @blp.response(200, V2StatsSchema)
    @blp.alt_response(404, schema=ErrorSchema)
    def get(self, name: str) -> dict[str, Any]:
        """Batching statistics of this process, per version

        Batches, requests and items run, mean batch size, mean time queued, the batch size
        distribution, failed batches and requests refused because the queue was full.
        """
        model = inference_service().model(name)
        return {
            "name": name,
            "versions": [
                {
                    "version": str(number),
                    "batching": version.spec.batching.to_dict()
                    if version.spec and version.spec.batching
                    else None,
                    "stats": version.batcher.stats.to_dict() if version.batcher else None,
                }
                for number, version in sorted(model.versions.items())
            ],
        }

"""Marshmallow schemas: the documented shape of every request and response."""

from __future__ import annotations

import datetime as dt
from typing import Any

import marshmallow as ma


class UtcDateTime(ma.fields.DateTime):
    """Every stored time is UTC, but SQLite hands it back without a zone; say it explicitly, or
    a client (the web UI in a browser) would read it as its own local time."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return super()._serialize(value, attr, obj, **kwargs)


class TensorSchema(ma.Schema):
    name = ma.fields.String(required=True)
    datatype = ma.fields.String(required=True)
    shape = ma.fields.List(ma.fields.Integer(), required=True)


class VersionSchema(ma.Schema):
    version = ma.fields.Integer(required=True)
    state = ma.fields.String(required=True, metadata={"description": "LOADING, READY or FAILED"})
    reason = ma.fields.String(allow_none=True, metadata={"description": "Why it FAILED"})
    load_seconds = ma.fields.Float(allow_none=True)
    runtime = ma.fields.String(metadata={"description": "tflite or savedmodel"})
    max_batch_size = ma.fields.Integer()
    inputs = ma.fields.List(ma.fields.Nested(TensorSchema))
    outputs = ma.fields.List(ma.fields.Nested(TensorSchema))
    preprocess = ma.fields.List(ma.fields.Dict())
    postprocess = ma.fields.Dict(allow_none=True)
    labels = ma.fields.List(ma.fields.String())
    provenance = ma.fields.Dict(
        metadata={"description": "How it was trained, dataset, holdout accuracy, artifact size"}
    )


class ModelSchema(ma.Schema):
    name = ma.fields.String(required=True)
    description = ma.fields.String()
    ready = ma.fields.Boolean(required=True)
    reason = ma.fields.String(allow_none=True)
    labels = ma.fields.List(ma.fields.String())
    version_policy = ma.fields.Dict()
    versions = ma.fields.List(ma.fields.Nested(VersionSchema))
    kind = ma.fields.String(metadata={"description": "ensemble, for an ensemble"})
    combine = ma.fields.String(metadata={"description": "An ensemble's: average, vote or all"})
    members = ma.fields.List(ma.fields.Dict(), metadata={"description": "An ensemble's members"})


class ScoreSchema(ma.Schema):
    label = ma.fields.String(required=True)
    score = ma.fields.Float(required=True)


class PredictionSchema(ma.Schema):
    label = ma.fields.String(required=True, metadata={"description": "The top label"})
    score = ma.fields.Float(required=True, metadata={"description": "Its probability"})
    top_k = ma.fields.List(ma.fields.Nested(ScoreSchema), required=True)


class PredictResponseSchema(ma.Schema):
    model = ma.fields.String(required=True)
    version = ma.fields.Integer(metadata={"description": "Absent for an ensemble"})
    combine = ma.fields.String(metadata={"description": "An ensemble's combination"})
    members = ma.fields.List(
        ma.fields.Dict(), metadata={"description": "An ensemble's members, side by side"}
    )
    route_reason = ma.fields.String(
        metadata={"description": "pinned, label, sticky, experiment, weighted, stable or latest"}
    )
    request_id = ma.fields.String()
    predictions = ma.fields.List(ma.fields.Nested(PredictionSchema), required=True)


PREDICT_REQUEST_BODY = {
    "required": True,
    "description": (
        "One or several items. Upload image files as multipart/form-data (any field name, "
        "several files allowed), send one image as the raw body, or send JSON "
        '`{"instances": [...]}` where each instance is an object of named features, '
        '`{"b64": "<base64 image>"}`, or a nested list already shaped like one input row.'
    ),
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["instances"],
                "properties": {"instances": {"type": "array", "items": {}}},
            },
            "example": {
                "instances": [
                    {
                        "sepal_length": 5.1,
                        "sepal_width": 3.5,
                        "petal_length": 1.4,
                        "petal_width": 0.2,
                    }
                ]
            },
        },
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    },
}


class V2TensorSchema(TensorSchema):
    data = ma.fields.List(ma.fields.Raw(), required=True)


class V2InferRequestSchema(ma.Schema):
    id = ma.fields.String()
    parameters = ma.fields.Dict()
    inputs = ma.fields.List(ma.fields.Nested(V2TensorSchema), required=True)
    outputs = ma.fields.List(ma.fields.Dict())


class V2InferResponseSchema(ma.Schema):
    model_name = ma.fields.String(required=True)
    model_version = ma.fields.String()
    id = ma.fields.String()
    outputs = ma.fields.List(ma.fields.Nested(V2TensorSchema), required=True)


class V2ModelMetadataSchema(ma.Schema):
    name = ma.fields.String(required=True)
    versions = ma.fields.List(ma.fields.String())
    platform = ma.fields.String(required=True)
    inputs = ma.fields.List(ma.fields.Nested(TensorSchema))
    outputs = ma.fields.List(ma.fields.Nested(TensorSchema))


class V2ServerMetadataSchema(ma.Schema):
    name = ma.fields.String(required=True)
    version = ma.fields.String(required=True)
    extensions = ma.fields.List(ma.fields.String())


class LiveSchema(ma.Schema):
    live = ma.fields.Boolean(required=True)


class ReadySchema(ma.Schema):
    ready = ma.fields.Boolean(required=True)
    name = ma.fields.String()


class V2VersionStatsSchema(ma.Schema):
    version = ma.fields.String()
    batching = ma.fields.Dict(allow_none=True)
    stats = ma.fields.Dict(allow_none=True)


class V2StatsSchema(ma.Schema):
    name = ma.fields.String(required=True)
    versions = ma.fields.List(ma.fields.Nested(V2VersionStatsSchema))


class JobProgressSchema(ma.Schema):
    total = ma.fields.Integer()
    done = ma.fields.Integer(metadata={"description": "Items answered"})
    failed = ma.fields.Integer(metadata={"description": "Items that hit an error"})
    percent = ma.fields.Float()


class JobSchema(ma.Schema):
    id = ma.fields.String()
    kind = ma.fields.String(metadata={"description": "predict (a batch job) or optimize"})
    model = ma.fields.String()
    version = ma.fields.Integer(metadata={"description": "Chosen at submission, for every item"})
    route_reason = ma.fields.String()
    state = ma.fields.String(
        metadata={"description": "queued, running, succeeded, failed or cancelled"}
    )
    input = ma.fields.Dict()
    progress = ma.fields.Nested(JobProgressSchema)
    error = ma.fields.String(allow_none=True)
    params = ma.fields.Dict(allow_none=True, metadata={"description": "An optimize job's request"})
    result = ma.fields.Dict(
        allow_none=True,
        metadata={"description": "An optimize job's new version and figures, or why it failed"},
    )
    created_at = UtcDateTime()
    started_at = UtcDateTime(allow_none=True)
    finished_at = UtcDateTime(allow_none=True)
    links = ma.fields.Dict(metadata={"description": "self, results_jsonl, results_csv"})


class JobResultsQuerySchema(ma.Schema):
    format = ma.fields.String(load_default="jsonl", validate=ma.validate.OneOf(["jsonl", "csv"]))

"""Every condition the serving core reports, each with the HTTP status a transport should use.

Transports (REST, later gRPC and messaging) map ``status`` to their own codes; the core never
knows which transport called it.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class ServingError(Exception):
    """Base class: a message for the client, a stable short ``code`` and an HTTP ``status``."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    code: str = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ModelNotFound(ServingError):
    status = HTTPStatus.NOT_FOUND
    code = "model_not_found"


class VersionNotFound(ServingError):
    status = HTTPStatus.NOT_FOUND
    code = "version_not_found"


class ModelNotReady(ServingError):
    """The model or version exists but cannot answer now (loading, or failed to load)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "model_not_ready"


class InvalidInput(ServingError):
    """The request is well-formed but its content does not fit the model's signature."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "invalid_input"


class UnsupportedMediaType(ServingError):
    """An uploaded file is not an image format the pipeline decodes."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class PayloadTooLarge(ServingError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


class ManifestError(ServingError):
    """A version's manifest is missing, malformed or inconsistent; the version is FAILED."""

    code = "manifest_error"


class RuntimeLoadError(ServingError):
    """A version's artifact could not be loaded or did not answer its warm-up; it is FAILED."""

    code = "runtime_load_error"


class InferenceFailed(ServingError):
    """The runtime raised while executing a batch that had passed validation."""

    code = "inference_failed"


# Offline work on the model repository: optimizing and importing versions.


class UnsupportedSource(ServingError):
    """The source of an optimization or import is not a format that can be used."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "unsupported_source"


class EvaluationDataError(ServingError):
    """A model declares no holdout or calibration set, or the declared one does not fit it."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "evaluation_data_error"


class ConversionFailed(ServingError):
    """The TFLite converter could not convert the source in the requested mode."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "conversion_failed"


class TrainingOpsRemain(ServingError):
    """A converted graph still holds training-only ops (dropout, random, batch-norm updates)."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "training_ops_remain"


class AccuracyGateFailed(ServingError):
    """The optimized version loses more holdout accuracy than allowed; nothing was written."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "accuracy_gate_failed"


class ImportFailed(ServingError):
    """An artifact could not be read or does not load as a version."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "import_failed"

"""Configuration: defaults here, ``MODELGATE_*`` environment variables override them,
tests pass a mapping to ``create_app``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

BASE_DIR = Path(__file__).resolve().parent


class Config:
    MODEL_ROOT = str(BASE_DIR / "models")
    # Each gunicorn worker loads its models after the fork, in the background, so liveness
    # answers at once and readiness turns true when every version has loaded or failed.
    LOAD_MODELS_IN_BACKGROUND = True
    TFLITE_THREADS = 1
    TF_INTRA_OP_THREADS = 1
    MAX_CONTENT_LENGTH = 10 * 1024 * 1024  # uploads
    MAX_JSON_BYTES = 1024 * 1024
    MAX_IMAGE_PIXELS = 25_000_000
    MAX_ITEMS_PER_REQUEST = 256
    LOG_LEVEL = "INFO"

    API_TITLE = "ModelGate"
    API_VERSION = "0.1.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "openapi.json"
    OPENAPI_SWAGGER_UI_PATH = "/docs"
    # Swagger UI is vendored under static/: the server works without internet access.
    OPENAPI_SWAGGER_UI_URL = "/static/vendor/swagger-ui/"
    API_SPEC_OPTIONS: ClassVar[dict[str, Any]] = {
        "info": {
            "description": (
                "ModelGate serves versioned TensorFlow models: its own REST API under /api, "
                "and the Open Inference Protocol v2 under /v2."
            )
        }
    }


class TestingConfig(Config):
    TESTING = True
    LOAD_MODELS_IN_BACKGROUND = False
    LOG_LEVEL = "WARNING"

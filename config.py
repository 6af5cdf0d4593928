"""Configuration: defaults here, ``MODELGATE_*`` environment variables override them,
tests pass a mapping to ``create_app``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = BASE_DIR / "instance"


class Config:
    MODEL_ROOT = str(BASE_DIR / "models")
    PIPELINE_ROOT = str(BASE_DIR / "pipelines")
    # Each gunicorn worker loads its models after the fork, before it accepts a connection:
    # the workers share one listening socket, so a request (and a readiness probe) only ever
    # reaches a worker whose versions have loaded and answered their warm-up. Loading in the
    # background instead let a probe see "ready" from one worker while another still loaded.
    LOAD_MODELS_IN_BACKGROUND = False
    TFLITE_THREADS = 1
    TF_INTRA_OP_THREADS = 1
    MAX_CONTENT_LENGTH = 10 * 1024 * 1024  # uploads
    MAX_JSON_BYTES = 1024 * 1024
    # Version archives uploaded by an admin: the upload and what it unpacks to.
    MAX_ARCHIVE_BYTES = 200 * 1024 * 1024
    MAX_IMAGE_PIXELS = 25_000_000
    MAX_ITEMS_PER_REQUEST = 256
    LOG_LEVEL = "INFO"
    # None: serve unless a `flask` CLI command other than `run` built the app (migrations and
    # user management must not load TensorFlow).
    START_SERVING: bool | None = None

    # State shared by every worker and replica: SQLite next to the app by default,
    # PostgreSQL when MODELGATE_DATABASE_URL (or DATABASE_URL) says so.
    SQLALCHEMY_DATABASE_URI = f"sqlite:///{INSTANCE_DIR / 'modelgate.db'}"
    SQLALCHEMY_ENGINE_OPTIONS: ClassVar[dict[str, Any]] = {"pool_pre_ping": True}

    # No default secret: `make run` generates one into instance/ on first start.
    JWT_SECRET_KEY: str | None = None
    JWT_ALGORITHM = "HS256"
    JWT_DECODE_ALGORITHMS: ClassVar[list[str]] = ["HS256"]
    JWT_ACCESS_TOKEN_EXPIRES = dt.timedelta(minutes=15)
    JWT_REFRESH_TOKEN_EXPIRES = dt.timedelta(days=7)
    JWT_TOKEN_LOCATION: ClassVar[list[str]] = ["headers", "cookies"]
    JWT_COOKIE_CSRF_PROTECT = True
    JWT_COOKIE_SAMESITE = "Lax"
    JWT_COOKIE_SECURE = True
    JWT_SESSION_COOKIE = False
    JWT_ERROR_MESSAGE_KEY = "error"
    MIN_SECRET_BYTES = 32

    # Rate limits (flask-limiter notation). The storage defaults to the shared database so
    # counts are exact across workers; set a redis:// URI to share them across replicas.
    RATELIMIT_STORAGE_URI: str | None = None
    RATELIMIT_PER_IP = "1200 per minute"
    RATELIMIT_PER_PRINCIPAL = "600 per minute"
    RATELIMIT_LOGIN_PER_IP = "30 per minute"
    RATELIMIT_LOGIN_PER_USER = "10 per minute"
    RATELIMIT_ROUTES: ClassVar[dict[str, str]] = {}
    RATELIMIT_MODELS: ClassVar[dict[str, str]] = {}
    # How many proxies in front set X-Forwarded-For; 0 trusts none (a forged header is ignored).
    TRUSTED_PROXY_COUNT = 0
    # How often each process looks for new version directories under MODEL_ROOT (0: never).
    MODEL_WATCH_INTERVAL_SECONDS = 2.0
    # How often each process checks the shared deployment state for a newer revision.
    DEPLOY_SYNC_INTERVAL_SECONDS = 0.25
    MAX_JSON_DEPTH = 64
    # Batch jobs: the upload, how many items and unpacked bytes it may hold, how many of one
    # caller's jobs may wait or run at once; how often each process looks for a job to run,
    # and how long a claimed job stays with a process that stopped renewing it (it then
    # resumes elsewhere, or in the restarted process, from the first unanswered item).
    JOB_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
    JOB_MAX_ITEMS = 10_000
    JOB_MAX_UNPACKED_BYTES = 256 * 1024 * 1024
    JOB_MAX_ACTIVE_PER_OWNER = 4
    JOB_POLL_INTERVAL_SECONDS = 1.0
    JOB_LEASE_SECONDS = 15.0
    MAX_FORM_PARTS = 64
    # werkzeug holds a multipart part's bytes up to the next newline in one buffer and checks
    # this limit on that buffer for file parts too (reading 64 KiB at a time): at 64 KiB every
    # upload above about that size was refused. It must exceed a read plus the longest line a
    # file may hold (a JSONL job line may be 1 MiB); text fields are bounded by it too.
    MAX_FORM_MEMORY_SIZE = 2 * 1024 * 1024

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
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    # One in-memory connection is shared: tests refresh policies explicitly, no poller.
    DEPLOY_SYNC_INTERVAL_SECONDS = 0.0
    MODEL_WATCH_INTERVAL_SECONDS = 0.0
    JOB_POLL_INTERVAL_SECONDS = 0.0  # tests run jobs with runner.run_once()
    JWT_SECRET_KEY = "testing-secret-that-is-long-enough-0123456789"
    JWT_COOKIE_SECURE = False

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.test import TestResponse

from app import create_app
from serving.runtimes import RuntimeFactory
from serving.runtimes.fake import fake_factory
from serving.service import InferenceService
from serving.settings import ServingSettings
from tests import fake_repo

BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return fake_repo.build(tmp_path / "models")


@pytest.fixture
def make_service(repo: Path) -> Callable[..., InferenceService]:
    """Build and load a service: on ``root`` (default the fake repo), with other ``factories``
    or settings (``max_items_per_request=2``)."""

    def make(
        root: Path | None = None,
        factories: Mapping[str, RuntimeFactory] | None = None,
        **settings: Any,
    ) -> InferenceService:
        settings.setdefault("load_in_background", False)
        serving = ServingSettings(model_root=root or repo, **settings)
        svc = InferenceService(serving, factories or {"fake": fake_factory})
        svc.start()
        return svc

    return make


@pytest.fixture
def service(make_service: Callable[..., InferenceService]) -> InferenceService:
    return make_service()


@pytest.fixture
def make_app(repo: Path) -> Callable[..., Flask]:
    """Build an app on ``root`` (default the fake repo), with other runtime ``factories`` or
    extra config keys (``MAX_CONTENT_LENGTH=1000``)."""

    def make(
        root: Path | None = None,
        factories: Mapping[str, RuntimeFactory] | None = None,
        **config: Any,
    ) -> Flask:
        return create_app(
            {
                "TESTING": True,
                "MODEL_ROOT": str(root or repo),
                "LOAD_MODELS_IN_BACKGROUND": False,
                **config,
            },
            runtime_factories=factories or {"fake": fake_factory},
        )

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Iterator[Flask]:
    yield make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def bundled_app() -> Flask:
    """The real bundled models, loaded once for the session (TensorFlow is slow to start)."""
    return create_app(
        {"TESTING": True, "MODEL_ROOT": str(BUNDLED_MODELS), "LOAD_MODELS_IN_BACKGROUND": False}
    )


@pytest.fixture
def bundled_client(bundled_app: Flask) -> FlaskClient:
    return bundled_app.test_client()


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def assert_error(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    """Check the error envelope every error answer shares; returns the body for more checks."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    assert set(body) <= {"error", "code", "status", "details", "request_id"}
    assert isinstance(body["error"], str) and body["error"]
    assert (body["code"], body["status"]) == (code, status)
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body

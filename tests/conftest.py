from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from app import create_app
from serving.runtimes.fake import fake_factory
from serving.service import InferenceService
from serving.settings import ServingSettings
from tests import fake_repo

BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return fake_repo.build(tmp_path / "models")


@pytest.fixture
def service(repo: Path) -> InferenceService:
    settings = ServingSettings(model_root=repo, load_in_background=False)
    svc = InferenceService(settings, {"fake": fake_factory})
    svc.start()
    return svc


@pytest.fixture
def app(repo: Path) -> Iterator[Flask]:
    app = create_app(
        {"TESTING": True, "MODEL_ROOT": str(repo), "LOAD_MODELS_IN_BACKGROUND": False},
        runtime_factories={"fake": fake_factory},
    )
    yield app


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

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_jwt_extended import create_access_token
from PIL import Image
from werkzeug.test import TestResponse

from accounts.models import User
from accounts.security import ROLES, hash_password
from app import create_app
from extensions import db
from serving.runtimes import RuntimeFactory
from serving.runtimes.fake import fake_factory
from serving.service import InferenceService
from serving.settings import ServingSettings
from tests import fake_repo, toy_model

BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"
PASSWORD = "correct horse battery staple"


@functools.cache
def password_hash() -> str:
    # Argon2 is slow on purpose; hash the shared test password once per session.
    return hash_password(PASSWORD)


def seed_users(app: Flask) -> None:
    """Create the schema and one user per role, named after the role, password PASSWORD."""
    with app.app_context():
        db.create_all()
        for role in ROLES:
            if db.session.scalar(sa.select(User).filter_by(username=role)) is None:
                db.session.add(
                    User(username=role, role=role, scopes="infer:*", password_hash=password_hash())
                )
        db.session.commit()


def token_for(app: Flask, username: str) -> str:
    """An access token as /auth/token issues it, without paying for a password check (the
    tests of /auth/token itself go through the route)."""
    with app.app_context():
        user = db.session.scalar(sa.select(User).filter_by(username=username))
        assert user is not None
        token: str = create_access_token(identity=f"user:{user.id}")
        return token


def client_as(app: Flask, username: str | None) -> FlaskClient:
    """A test client that sends the given user's bearer token (none for ``None``)."""
    client = app.test_client()
    if username is not None:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(app, username)}"
    return client


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
        app = create_app(
            {
                "TESTING": True,
                "MODEL_ROOT": str(root or repo),
                "LOAD_MODELS_IN_BACKGROUND": False,
                "PIPELINE_ROOT": "",  # the bundled ensembles name bundled models
                **config,
            },
            runtime_factories=factories or {"fake": fake_factory},
        )
        seed_users(app)
        return app

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Iterator[Flask]:
    yield make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Signed in as an admin: tests of serving behaviour are not about permissions."""
    return client_as(app, "admin")


@pytest.fixture
def anon_client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def bundled_app() -> Flask:
    """The real bundled models, loaded once for the session (TensorFlow is slow to start)."""
    app = create_app(
        {"TESTING": True, "MODEL_ROOT": str(BUNDLED_MODELS), "LOAD_MODELS_IN_BACKGROUND": False}
    )
    seed_users(app)
    return app


@pytest.fixture
def bundled_client(bundled_app: Flask) -> FlaskClient:
    return client_as(bundled_app, "predictor")


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


@pytest.fixture(scope="session")
def toy(tmp_path_factory: pytest.TempPathFactory) -> toy_model.Toy:
    """A tiny trained Keras classifier and a repository holding it as version 1 (TensorFlow,
    seconds): built once for every optimize and import test."""
    return toy_model.build(tmp_path_factory.mktemp("toy"))

"""The schema comes from the migrations (on SQLite and PostgreSQL) and matches the models;
users are managed from the command line, and the first admin's password is printed once."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask

from accounts.models import User
from app import create_app
from extensions import db
from serving.runtimes.fake import fake_factory
from tests.security.conftest import assert_unauthorized, bearer, flask_cli

TABLES = {
    "users",
    "api_keys",
    "revoked_tokens",
    "rate_counters",
    "deployments",
    "audit_log",
    "stat_counters",
    "prediction_log",
    "feedback",
    "jobs",
    "job_results",
    "alembic_version",
}


def pending_changes(database_uri: str) -> list[object]:
    """What autogenerate would put in a new migration: nothing, if models and migrations agree."""
    engine = sa.create_engine(database_uri)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, db.metadata))
    finally:
        engine.dispose()


def tables(database_uri: str) -> set[str]:
    engine = sa.create_engine(database_uri)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_the_schema_on_an_empty_sqlite_file_and_twice_is_harmless(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"

    first = flask_cli(uri, "db", "upgrade")
    second = flask_cli(uri, "db", "upgrade")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "Running upgrade" in first.stderr and "Running upgrade" not in second.stderr
    assert tables(uri) == TABLES
    assert pending_changes(uri) == []


def test_upgrade_creates_the_schema_on_postgresql_matching_the_models(pg_database: str) -> None:
    result = flask_cli(pg_database, "db", "upgrade")

    assert result.returncode == 0, result.stderr
    assert tables(pg_database) == TABLES
    assert pending_changes(pg_database) == []


@pytest.fixture(scope="module")
def migrated_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty database that `flask db upgrade` made, to be copied (one upgrade per module)."""
    path = tmp_path_factory.mktemp("migrated") / "template.db"
    result = flask_cli(f"sqlite:///{path}", "db", "upgrade")
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def empty_app(repo: Path, tmp_path: Path, migrated_file: Path) -> Callable[[], Flask]:
    """Apps on one migrated but empty database, as `make run` finds it the first time."""
    path = tmp_path / "empty.db"
    shutil.copyfile(migrated_file, path)
    uri = f"sqlite:///{path}"

    def make() -> Flask:
        return create_app(
            {"TESTING": True, "MODEL_ROOT": str(repo), "SQLALCHEMY_DATABASE_URI": uri},
            runtime_factories={"fake": fake_factory},
        )

    return make


def test_bootstrap_prints_a_random_admin_password_once(empty_app: Callable[[], Flask]) -> None:
    app = empty_app()
    runner = app.test_cli_runner()

    first = runner.invoke(args=["users", "bootstrap"])
    second = runner.invoke(args=["users", "bootstrap"])

    assert first.exit_code == 0 and second.exit_code == 0
    found = re.search(r"admin / (\S+)", first.output)
    assert found, first.output
    password = found.group(1)
    assert len(password) >= 20
    assert second.output == ""
    client = app.test_client()
    response = client.post("/auth/token", json={"username": "admin", "password": password})
    assert response.status_code == 200
    assert (
        client.get("/api/users", headers=bearer(response.get_json()["access_token"])).status_code
        == 200
    )
    with app.app_context():
        stored = db.session.scalar(sa.select(User.password_hash))
    assert stored is not None and stored.startswith("$argon2") and password not in stored


def test_bootstrap_passwords_differ_between_installations(
    empty_app: Callable[[], Flask], repo: Path, tmp_path: Path, migrated_file: Path
) -> None:
    shutil.copyfile(migrated_file, tmp_path / "other.db")
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    other = create_app(
        {"TESTING": True, "MODEL_ROOT": str(repo), "SQLALCHEMY_DATABASE_URI": uri},
        runtime_factories={"fake": fake_factory},
    )

    outputs = [
        a.test_cli_runner().invoke(args=["users", "bootstrap"]).output for a in (empty_app(), other)
    ]

    passwords = [re.search(r"admin / (\S+)", output).group(1) for output in outputs]  # type: ignore[union-attr]
    assert passwords[0] != passwords[1]


def test_users_create_list_and_disable_from_the_command_line(
    empty_app: Callable[[], Flask],
) -> None:
    app = empty_app()
    runner = app.test_cli_runner()
    password = "a long enough password"

    created = runner.invoke(
        args=["users", "create", "ops", "--role", "admin", "--password", password]
    )
    duplicate = runner.invoke(
        args=["users", "create", "ops", "--role", "viewer", "--password", password]
    )
    short = runner.invoke(
        args=["users", "create", "dev", "--role", "viewer", "--password", "short"]
    )
    no_role = runner.invoke(args=["users", "create", "dev", "--password", password])
    bad_role = runner.invoke(
        args=["users", "create", "dev", "--role", "root", "--password", password]
    )

    assert created.exit_code == 0, created.output
    assert "created admin 'ops'" in created.output
    assert [r.exit_code != 0 for r in (duplicate, short, no_role, bad_role)] == [True] * 4
    listing = runner.invoke(args=["users", "list"]).output
    assert "ops\tadmin" in listing and "argon2" not in listing and "dev" not in listing

    client = app.test_client()
    token = client.post("/auth/token", json={"username": "ops", "password": password}).get_json()
    assert client.get("/api/users", headers=bearer(token["access_token"])).status_code == 200

    assert runner.invoke(args=["users", "disable", "ops"]).exit_code == 0

    assert_unauthorized(client.get("/api/users", headers=bearer(token["access_token"])))
    assert runner.invoke(args=["users", "disable", "nobody"]).exit_code != 0

"""Rate limits: per principal, per client IP, per route and per model; the 429 answer; which
client IP counts when X-Forwarded-For is (not) trusted."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from app import create_app
from serving.runtimes.fake import fake_factory
from tests.conftest import assert_error, client_as
from tests.security.conftest import create_key, dispose

MakeApp = Callable[..., Flask]
TAB = {"instances": [[1, 2, 3]]}


def statuses(send: Callable[[], TestResponse], times: int) -> list[int]:
    return [send().status_code for _ in range(times)]


def test_principal_limit_lets_exactly_the_limit_through(make_app: MakeApp) -> None:
    app = make_app(RATELIMIT_PER_PRINCIPAL="5 per minute")
    viewer, predictor = client_as(app, "viewer"), client_as(app, "predictor")

    assert statuses(lambda: viewer.get("/api/models"), 8) == [200] * 5 + [429] * 3
    assert predictor.get("/api/models").status_code == 200  # each principal counts alone


def test_429_carries_the_envelope_retry_after_and_both_header_families(
    make_app: MakeApp,
) -> None:
    client = client_as(make_app(RATELIMIT_PER_PRINCIPAL="2 per minute"), "viewer")
    first = client.get("/api/models")
    client.get("/api/models")

    refused = client.get("/api/models")

    assert (first.headers["X-RateLimit-Limit"], first.headers["X-RateLimit-Remaining"]) == (
        "2",
        "1",
    )
    assert (first.headers["RateLimit-Limit"], first.headers["RateLimit-Remaining"]) == ("2", "1")
    assert "Retry-After" not in first.headers
    assert_error(refused, 429, "too_many_requests")
    assert refused.headers["X-RateLimit-Remaining"] == refused.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    assert 0 <= int(refused.headers["RateLimit-Reset"]) <= 61
    assert abs(int(refused.headers["X-RateLimit-Reset"]) - time.time() - 60) <= 2
    assert refused.headers["Cache-Control"] == "no-store"


def test_per_ip_limit_counts_anonymous_callers_by_address(make_app: MakeApp) -> None:
    client = make_app(RATELIMIT_PER_IP="3 per minute").test_client()

    def live(address: str) -> TestResponse:
        return client.get("/v2/health/live", environ_overrides={"REMOTE_ADDR": address})

    assert statuses(lambda: live("10.0.0.1"), 4) == [200, 200, 200, 429]
    assert_error(live("10.0.0.1"), 429, "too_many_requests")
    assert live("10.0.0.2").status_code == 200


def test_per_ip_limit_counts_attempts_with_bad_credentials(make_app: MakeApp) -> None:
    client = make_app(RATELIMIT_PER_IP="3 per minute").test_client()
    guesses = [
        {"X-API-Key": "mg_guess_secret"},
        {"Authorization": "Bearer not.a.token"},
        {"X-API-Key": "garbage"},
    ]

    answers = [client.get("/api/models", headers=h).status_code for h in guesses]

    assert answers == [401, 401, 401]
    assert_error(client.get("/api/models", headers=guesses[0]), 429, "too_many_requests")


def test_per_ip_limit_applies_to_signed_in_callers_too(make_app: MakeApp) -> None:
    app = make_app(RATELIMIT_PER_IP="3 per minute")
    viewer, predictor = client_as(app, "viewer"), client_as(app, "predictor")

    answers = [viewer.get("/api/models").status_code, predictor.get("/api/models").status_code]
    answers += [viewer.get("/api/models").status_code, predictor.get("/api/models").status_code]

    assert answers == [200, 200, 200, 429]


def test_forged_x_forwarded_for_changes_nothing_without_trusted_proxies(
    make_app: MakeApp,
) -> None:
    client = make_app(RATELIMIT_PER_IP="2 per minute").test_client()

    answers = [
        client.get("/v2/health/live", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(4)
    ]

    assert answers == [200, 200, 429, 429]


def test_x_forwarded_for_is_the_client_ip_behind_one_trusted_proxy(make_app: MakeApp) -> None:
    client = make_app(RATELIMIT_PER_IP="2 per minute", TRUSTED_PROXY_COUNT=1).test_client()

    def live(forwarded_for: str) -> int:
        headers = {"X-Forwarded-For": forwarded_for}
        return client.get("/v2/health/live", headers=headers).status_code

    assert [live("203.0.113.1") for _ in range(3)] == [200, 200, 429]
    assert live("203.0.113.2") == 200
    # Only the address the trusted proxy appended counts; what the client put before it does not.
    assert live("198.51.100.7, 203.0.113.1") == 429


def test_route_limit_from_config_applies_to_that_route_only(make_app: MakeApp) -> None:
    app = make_app(RATELIMIT_ROUTES={"models.ModelDetail": "2 per minute"})
    viewer = client_as(app, "viewer")

    assert statuses(lambda: viewer.get("/api/models/tab"), 3) == [200, 200, 429]
    assert viewer.get("/api/models/img").status_code == 429  # per route, not per model
    assert viewer.get("/api/models").status_code == 200
    assert client_as(app, "predictor").get("/api/models/tab").status_code == 200


def test_model_limit_from_config_applies_to_inference_on_that_model(make_app: MakeApp) -> None:
    app = make_app(RATELIMIT_MODELS={"tab": "2 per minute"})
    predictor = client_as(app, "predictor")
    v2_body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}

    answers = [
        predictor.post("/api/models/tab/predict", json=TAB).status_code,
        predictor.post("/v2/models/tab/infer", json=v2_body).status_code,
        predictor.post("/api/models/tab/versions/1/predict", json=TAB).status_code,
    ]

    assert answers == [200, 200, 429]
    assert predictor.get("/api/models/tab").status_code == 200  # reading is not inferring
    image = predictor.post("/api/models/img/predict", data=b"x", content_type="image/png")
    assert image.status_code != 429
    assert client_as(app, "deployer").post("/api/models/tab/predict", json=TAB).status_code == 200


def test_key_limit_and_user_limit_are_separate_budgets(make_app: MakeApp) -> None:
    app = make_app(RATELIMIT_PER_PRINCIPAL="2 per minute")
    admin = client_as(app, "admin")
    _, secret = create_key(admin)
    assert statuses(lambda: admin.get("/api/models"), 1) == [200]  # admin spent 2 of 2

    with_key = app.test_client()
    answers = statuses(lambda: with_key.get("/api/models", headers={"X-API-Key": secret}), 3)

    assert answers == [200, 200, 429]
    assert admin.get("/api/models").status_code == 429


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'limits.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


def test_limits_are_exact_across_two_apps_counting_in_the_shared_database(
    make_app: MakeApp, shared_database: str
) -> None:
    first = make_app(
        RATELIMIT_PER_PRINCIPAL="4 per minute", SQLALCHEMY_DATABASE_URI=shared_database
    )
    config = ("TESTING", "MODEL_ROOT", "RATELIMIT_PER_PRINCIPAL", "SQLALCHEMY_DATABASE_URI")
    second = create_app(
        {key: first.config[key] for key in config}, runtime_factories={"fake": fake_factory}
    )
    try:
        assert first.config["RATELIMIT_STORAGE_URI"].startswith("sql+")
        one, two = client_as(first, "viewer"), client_as(second, "viewer")
        answers = [c.get("/api/models").status_code for c in (one, two, one, two, one, two)]
        assert answers == [200, 200, 200, 200, 429, 429]
    finally:
        dispose(first, second)


def test_limits_are_exact_across_two_apps_sharing_redis(
    make_app: MakeApp, redis_limits: dict[str, str]
) -> None:
    shared = {**redis_limits, "RATELIMIT_PER_PRINCIPAL": "3 per minute"}
    first, second = make_app(**shared), make_app(**shared)
    # Both apps seeded the same users in the same order, so "viewer" is the same principal.
    one, two = client_as(first, "viewer"), client_as(second, "viewer")

    answers = [c.get("/api/models").status_code for c in (one, two, one, two)]

    assert answers == [200, 200, 200, 429]

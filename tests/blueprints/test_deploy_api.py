"""Deployment operations over HTTP: promote, rollback, canary, experiment, shadow, If-Match,
audit, and the headers that say which version answered and why."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from deployments import store
from extensions import db, inference_service
from serving.routing import TrafficPolicy
from tests.conftest import assert_error, client_as

ROW = {"instances": [{"a": 1, "b": 2}]}


def predict(client: FlaskClient, path: str = "/api/models/tab/predict", **kwargs: object):  # type: ignore[no-untyped-def]
    response = client.post(path, json=ROW, **kwargs)
    assert response.status_code == 200, response.get_json()
    return response


def test_without_a_policy_the_newest_ready_version_answers_and_says_why(
    client: FlaskClient,
) -> None:
    response = predict(client)
    assert response.headers["X-Model-Version"] == "2"
    assert response.headers["X-Route-Reason"] == "latest"
    assert response.get_json()["route_reason"] == "latest"


def test_promote_moves_stable_in_one_step_and_rollback_returns(client: FlaskClient) -> None:
    assert client.post("/api/models/tab/promote", json={"version": 1}).status_code == 200
    assert predict(client).headers["X-Model-Version"] == "1"
    promoted = client.post("/api/models/tab/promote", json={"version": 2})
    assert promoted.get_json()["labels"] == {"stable": 2}
    assert predict(client).headers["X-Route-Reason"] == "stable"

    rolled_back = client.post("/api/models/tab/rollback")

    assert rolled_back.status_code == 200
    assert rolled_back.get_json()["labels"]["stable"] == 1
    assert predict(client).headers["X-Model-Version"] == "1"
    assert_error(client.post("/api/models/tab/rollback"), 409, "conflict")


def test_only_a_ready_version_can_be_promoted(client: FlaskClient) -> None:
    failed = client.post("/api/models/tab/promote", json={"version": 3})
    absent = client.post("/api/models/tab/promote", json={"version": 9})
    assert_error(failed, 409, "conflict")
    assert_error(absent, 409, "conflict")
    assert_error(
        client.post("/api/models/nope/promote", json={"version": 1}), 404, "model_not_found"
    )


def test_canary_shares_traffic_and_zero_percent_is_a_dark_launch(client: FlaskClient) -> None:
    client.post("/api/models/tab/promote", json={"version": 1})
    canary = client.put("/api/models/tab/canary", json={"version": 2, "percent": 50})
    assert canary.get_json()["weights"] == {"1": 50.0, "2": 50.0}

    seen = Counter(predict(client).headers["X-Model-Version"] for _ in range(200))
    assert 60 <= seen["2"] <= 140, seen

    client.put("/api/models/tab/canary", json={"version": 2, "percent": 0})
    assert {predict(client).headers["X-Model-Version"] for _ in range(50)} == {"1"}
    by_label = predict(client, "/api/models/tab/labels/canary/predict")
    assert by_label.headers["X-Model-Version"] == "2"
    assert by_label.headers["X-Route-Reason"] == "label"


def test_a_pinned_version_bypasses_the_weights(client: FlaskClient) -> None:
    client.post("/api/models/tab/promote", json={"version": 1})
    client.put("/api/models/tab/canary", json={"version": 2, "percent": 100})
    pinned = predict(client, "/api/models/tab/versions/1/predict")
    assert (pinned.headers["X-Model-Version"], pinned.headers["X-Route-Reason"]) == ("1", "pinned")


def test_experiment_is_sticky_per_header_and_reported_in_headers(client: FlaskClient) -> None:
    body = {
        "name": "ab",
        "sticky": "header:X-User",
        "variants": [
            {"name": "control", "version": 1, "weight": 50},
            {"name": "treatment", "version": 2, "weight": 50},
        ],
    }
    assert client.put("/api/models/tab/experiment", json=body).status_code == 200

    for user in ("ann", "bob", "cy", "dee", "ed"):
        answers = {
            (r.headers["X-Model-Version"], r.headers["X-Experiment-Variant"])
            for r in (predict(client, headers={"X-User": user}) for _ in range(5))
        }
        assert len(answers) == 1
    assert predict(client, headers={"X-User": "ann"}).headers["X-Route-Reason"] == "sticky"
    assert client.delete("/api/models/tab/experiment").get_json()["experiment"] is None


def test_v2_infer_is_routed_too(client: FlaskClient) -> None:
    client.post("/api/models/tab/promote", json={"version": 1})
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    response = client.post("/v2/models/tab/infer", data=json.dumps(body))
    assert response.status_code == 200
    assert response.headers["X-Route-Reason"] == "stable"
    assert response.get_json()["model_version"] == "1"


def test_v2_label_route_answers_with_the_labelled_version(client: FlaskClient) -> None:
    client.post("/api/models/tab/promote", json={"version": 1})
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    response = client.post("/v2/models/tab/labels/stable/infer", data=json.dumps(body))
    assert (response.headers["X-Model-Version"], response.headers["X-Route-Reason"]) == (
        "1",
        "label",
    )
    missing = client.post("/v2/models/tab/labels/nope/infer", data=json.dumps(body))
    assert_error(missing, 404, "label_not_found")


def test_concurrent_writers_with_the_same_if_match_exactly_one_wins(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'state.db'}")
    clients = [client_as(app, "deployer") for _ in range(8)]
    etag = clients[0].get("/api/models/tab/deployment").headers["ETag"]
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def write(index: int) -> None:
        barrier.wait(5)
        response = clients[index].post(
            "/api/models/tab/promote", json={"version": 1 + index % 2}, headers={"If-Match": etag}
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(statuses) == [200] + [412] * (len(clients) - 1)
    with app.app_context():
        assert len(store.audit("tab")) == 1


def test_if_match_lets_exactly_one_of_two_concurrent_writers_win(client: FlaskClient) -> None:
    etag = client.get("/api/models/tab/deployment").headers["ETag"]
    first = client.post("/api/models/tab/promote", json={"version": 1}, headers={"If-Match": etag})
    second = client.post("/api/models/tab/promote", json={"version": 2}, headers={"If-Match": etag})

    assert first.status_code == 200
    assert_error(second, 412, "revision_mismatch")
    assert first.headers["ETag"] == '"1"'
    assert client.get("/api/models/tab/deployment").get_json()["labels"] == {"stable": 1}


def test_every_accepted_change_writes_one_audit_record(client: FlaskClient) -> None:
    client.post("/api/models/tab/promote", json={"version": 1})
    client.put("/api/models/tab/canary", json={"version": 2, "percent": 10})
    client.post("/api/models/tab/promote", json={"version": 3})  # refused: not READY
    client.delete("/api/models/tab/canary")

    records = client.get("/api/audit?model=tab").get_json()

    assert [r["action"] for r in records] == ["canary-end", "canary", "promote"]
    assert [r["revision"] for r in records] == [3, 2, 1]
    assert {r["actor"] for r in records} == {"admin"}
    assert records[1]["before"]["labels"] == {"stable": 1}
    assert records[1]["after"]["weights"] == {"1": 90.0, "2": 10.0}


def test_a_deployer_changes_traffic_but_a_predictor_may_not(app: Flask) -> None:
    assert (
        client_as(app, "deployer").post("/api/models/tab/promote", json={"version": 1}).status_code
        == 200
    )
    refused = client_as(app, "predictor").post("/api/models/tab/promote", json={"version": 2})
    assert_error(refused, 403, "forbidden")


def test_when_the_database_is_down_predictions_go_on_and_writes_answer_503(
    client: FlaskClient, app: Flask, monkeypatch: object
) -> None:
    client.post("/api/models/tab/promote", json={"version": 1})

    def down(*_args: object, **_kwargs: object) -> None:
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    with app.app_context():
        monkeypatch.setattr(db.session, "get", down)  # type: ignore[attr-defined]
        write = client.put("/api/models/tab/canary", json={"version": 2, "percent": 10})
    assert_error(write, 503, "state_unavailable")
    assert write.headers["Retry-After"] == "1"
    assert predict(client).headers["X-Model-Version"] == "1"


def test_routing_toml_seeds_models_without_state_once(app: Flask, repo: Path) -> None:
    (repo / "routing.toml").write_text("[tab]\nlabels = { stable = 1 }\n[unknown]\nlabels = {}\n")
    with app.app_context():
        assert store.seed(repo / "routing.toml", {"tab", "img"}) == ["tab"]
        assert store.seed(repo / "routing.toml", {"tab", "img"}) == []
        assert store.current("tab").labels == {"stable": 1}
        assert [r.action for r in store.audit("tab")] == ["seed"]


def test_a_change_reaches_another_process_within_a_second(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    shared = f"sqlite:///{tmp_path / 'state.db'}"
    writer = make_app(SQLALCHEMY_DATABASE_URI=shared)
    reader = make_app(SQLALCHEMY_DATABASE_URI=shared, DEPLOY_SYNC_INTERVAL_SECONDS=0.1)
    with reader.app_context():
        service = inference_service()
    from deployments.sync import PolicySync

    sync = PolicySync(reader, service, 0.1)
    sync.start()
    try:
        started = time.monotonic()
        assert (
            client_as(writer, "deployer")
            .post("/api/models/tab/promote", json={"version": 1})
            .status_code
            == 200
        )
        while service.policy("tab").revision < 1 and time.monotonic() - started < 1.0:
            time.sleep(0.02)
        assert service.policy("tab").labels == {"stable": 1}
        assert time.monotonic() - started < 1.0
    finally:
        sync.stop()


def test_a_late_seed_is_refused_rather_than_written_again(app: Flask) -> None:
    # Two workers seeding at once: both may see no row; the second's change then expects
    # revision 0, finds 1, and must not store the same state as revision 2.
    seed = TrafficPolicy.from_dict({"labels": {"stable": 1}})
    with app.app_context():
        store.change("tab", "seed", "worker 1", lambda _before: seed, 0)
        with pytest.raises(store.RevisionMismatch):
            store.change("tab", "seed", "worker 2", lambda _before: seed, 0)
        assert store.current("tab").revision == 1
        assert len(store.audit("tab")) == 1

"""A/B statistics, feedback and shadow comparison, reported over HTTP."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from extensions import inference_service
from tests.conftest import assert_error

EXPERIMENT = {
    "name": "ab",
    "sticky": "header:X-User",
    "variants": [
        {"name": "control", "version": 1, "weight": 50},
        {"name": "treatment", "version": 2, "weight": 50},
    ],
}


def predict_as(client: FlaskClient, user: str, row: dict[str, float]) -> tuple[str, str, str]:
    response = client.post(
        "/api/models/tab/predict", json={"instances": [row]}, headers={"X-User": user}
    )
    assert response.status_code == 200, response.get_json()
    return (
        response.headers["X-Request-ID"],
        response.headers["X-Experiment-Variant"],
        response.get_json()["predictions"][0]["label"],
    )


def test_report_counts_requests_labels_latency_and_feedback_accuracy_per_variant(
    client: FlaskClient,
) -> None:
    assert client.put("/api/models/tab/experiment", json=EXPERIMENT).status_code == 200
    answers = [predict_as(client, f"user{i}", {"a": 5, "b": 1}) for i in range(40)]
    for request_id, variant, label in answers:
        truth = label if variant == "control" else "c"  # treatment is always wrong here
        assert (
            client.post(
                "/api/feedback", json={"request_id": request_id, "label": truth}
            ).status_code
            == 201
        )

    report = client.get("/api/models/tab/experiment/report").get_json()

    variants = report["variants"]
    assert set(variants) == {"control", "treatment"}
    per_variant = {v: sum(1 for _, name, _ in answers if name == v) for v in variants}
    for name, stats in variants.items():
        assert stats["requests"] == per_variant[name]
        assert stats["errors"] == 0
        assert stats["labels"] == {"a": per_variant[name]}
        assert stats["latency_ms"]["p50"] is not None
        assert stats["feedback"]["n"] == per_variant[name]
    assert variants["control"]["feedback"]["accuracy"] == 1.0
    assert variants["treatment"]["feedback"]["accuracy"] == 0.0
    low, high = variants["control"]["feedback"]["accuracy_ci95"]
    assert 0.7 < low < 1.0 and high == 1.0
    assert report["comparison"]["p_value"] < 0.001


def test_feedback_for_an_unknown_request_is_404(client: FlaskClient) -> None:
    response = client.post("/api/feedback", json={"request_id": "nope", "label": "a"})
    assert_error(response, 404, "unknown_request")
    assert_error(client.post("/api/feedback", json={"request_id": "x"}), 422, "invalid_input")


def test_shadow_answers_are_compared_and_never_returned(app: Flask, client: FlaskClient) -> None:
    client.post("/api/models/tab/promote", json={"version": 1})
    assert (
        client.put("/api/models/tab/shadow", json={"version": 2, "percent": 100}).status_code == 200
    )

    answers = set()
    for _ in range(10):
        response = client.post("/api/models/tab/predict", json={"instances": [{"a": 3, "b": 1}]})
        answers.add(response.headers["X-Model-Version"])
        with app.app_context():
            assert inference_service().wait_shadows(timeout_seconds=5)
    assert answers == {"1"}
    report = client.get("/api/models/tab/experiment/report").get_json()

    shadow = report["shadows"]["2"]
    assert (shadow["compared"], shadow["dropped"], shadow["errors"]) == (10, 0, 0)
    assert shadow["top1_agreement"] == 1.0  # v1 and v2 echo the same features
    assert shadow["mean_abs_score_diff"] == 0.0


def test_v2_experiment_requests_are_counted_per_variant(client: FlaskClient) -> None:
    assert client.put("/api/models/tab/experiment", json=EXPERIMENT).status_code == 200
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    for user in ("u1", "u2", "u3", "u4"):
        response = client.post("/v2/models/tab/infer", json=body, headers={"X-User": user})
        assert response.headers["X-Route-Reason"] == "sticky"

    variants = client.get("/api/models/tab/experiment/report").get_json()["variants"]

    assert sum(v["requests"] for v in variants.values()) == 4
    assert all(v["labels"] == {} for v in variants.values())

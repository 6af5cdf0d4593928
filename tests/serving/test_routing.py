"""Router: precedence, weights, stickiness, shadow; TrafficPolicy parsing."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from serving.errors import InvalidInput, ModelNotReady
from serving.routing import (
    Experiment,
    LabelNotFound,
    Router,
    RouteReason,
    RouteRequest,
    Shadow,
    TrafficPolicy,
    Variant,
    freeze,
    sticky_bucket,
)

READY = {1, 2, 3}


def policy(**kwargs: object) -> TrafficPolicy:
    return TrafficPolicy.from_dict(kwargs)


def test_weights_are_honoured_within_two_points_over_ten_thousand_draws() -> None:
    router = Router(random.Random(7))
    canary = policy(labels={"stable": 1}, weights={"1": 70, "2": 20, "3": 10})

    counts = Counter(
        router.route("m", canary, READY, RouteRequest()).version for _ in range(10_000)
    )

    for version, weight in {1: 70, 2: 20, 3: 10}.items():
        assert abs(counts[version] / 100 - weight) <= 2, counts


def test_a_sticky_key_always_lands_on_the_same_variant() -> None:
    ab = policy(
        experiment={
            "name": "exp",
            "variants": [
                {"name": "a", "version": 1, "weight": 50},
                {"name": "b", "version": 2, "weight": 50},
            ],
        }
    )
    routers = [Router(random.Random(seed)) for seed in range(5)]  # "workers" with other rngs

    for user in (f"user:{i}" for i in range(200)):
        seen = {r.route("m", ab, READY, RouteRequest(sticky_key=user)) for r in routers}
        assert len(seen) == 1
        assert next(iter(seen)).reason is RouteReason.STICKY


def test_sticky_assignment_splits_users_by_the_variant_weights() -> None:
    ab = policy(
        experiment={
            "name": "exp",
            "variants": [
                {"name": "a", "version": 1, "weight": 80},
                {"name": "b", "version": 2, "weight": 20},
            ],
        }
    )
    router = Router(random.Random(1))

    variants = Counter(
        router.route("m", ab, READY, RouteRequest(sticky_key=f"key:{i}")).variant
        for i in range(10_000)
    )

    assert abs(variants["a"] / 100 - 80) <= 2


def test_sticky_bucket_is_a_fixed_sha256_position() -> None:
    # A constant, not a self-comparison: every process, interpreter and PYTHONHASHSEED must
    # compute this same value (hash() would not).
    assert sticky_bucket("exp", "user:1") == pytest.approx(0.15678929487233645, abs=1e-15)
    assert sticky_bucket("other", "user:1") != sticky_bucket("exp", "user:1")


def test_precedence_is_pinned_then_label_then_experiment_then_weights() -> None:
    everything = policy(
        labels={"stable": 1, "canary": 3},
        weights={"1": 50, "3": 50},
        experiment={
            "name": "e",
            "variants": [
                {"name": "a", "version": 2, "weight": 50},
                {"name": "b", "version": 2, "weight": 50},
            ],
        },
    )
    router = Router(random.Random(0))

    assert (
        router.route("m", everything, READY, RouteRequest(version=1)).reason is RouteReason.PINNED
    )
    by_label = router.route("m", everything, READY, RouteRequest(label="canary"))
    assert (by_label.version, by_label.reason) == (3, RouteReason.LABEL)
    by_experiment = router.route("m", everything, READY, RouteRequest())
    assert (by_experiment.version, by_experiment.reason) == (2, RouteReason.EXPERIMENT)
    without_experiment = TrafficPolicy(labels=everything.labels, weights=everything.weights)
    assert (
        router.route("m", without_experiment, READY, RouteRequest()).reason is RouteReason.WEIGHTED
    )


def test_without_weights_traffic_goes_to_stable_else_the_newest_ready() -> None:
    router = Router(random.Random(0))
    stable = router.route("m", policy(labels={"stable": 1}), READY, RouteRequest())
    latest = router.route("m", TrafficPolicy(), READY, RouteRequest())

    assert (stable.version, stable.reason) == (1, RouteReason.STABLE)
    assert (latest.version, latest.reason) == (3, RouteReason.LATEST)


def test_versions_that_are_not_ready_get_no_weighted_traffic() -> None:
    router = Router(random.Random(0))
    canary = policy(labels={"stable": 1}, weights={"1": 10, "2": 90})

    versions = {router.route("m", canary, {1}, RouteRequest()).version for _ in range(200)}

    assert versions == {1}


def test_an_unknown_label_is_404_and_no_ready_version_is_503() -> None:
    router = Router()
    with pytest.raises(LabelNotFound):
        router.route("m", TrafficPolicy(), READY, RouteRequest(label="nope"))
    with pytest.raises(ModelNotReady):
        router.route("m", TrafficPolicy(), set(), RouteRequest())


def test_shadow_copies_the_declared_share_and_never_replaces_the_answer() -> None:
    router = Router(random.Random(3))
    shadowed = TrafficPolicy(labels=freeze({"stable": 1}), shadow=Shadow(version=2, percent=25))

    routes = [router.route("m", shadowed, READY, RouteRequest()) for _ in range(4000)]

    assert {r.version for r in routes} == {1}
    share = sum(r.shadow_version == 2 for r in routes) / len(routes)
    assert abs(share - 0.25) < 0.03


@pytest.mark.parametrize(
    "bad",
    [
        {"weights": {"1": 60, "2": 30}},
        {"weights": {"1": 120, "2": -20}},
        {"experiment": {"name": "e", "variants": [{"name": "a", "version": 1, "weight": 100}]}},
        {
            "experiment": {
                "name": "e",
                "sticky": "cookie",
                "variants": [
                    {"name": "a", "version": 1, "weight": 50},
                    {"name": "b", "version": 2, "weight": 50},
                ],
            }
        },
        {"shadow": {"version": 2, "percent": 0}},
        {"labels": {"stable": "two"}},
    ],
)
def test_invalid_policies_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        TrafficPolicy.from_dict(bad)


def test_policy_round_trips_through_its_dict() -> None:
    original = TrafficPolicy(
        revision=4,
        labels=freeze({"stable": 2, "canary": 3}),
        weights=freeze({2: 90.0, 3: 10.0}),
        experiment=Experiment("e", (Variant("a", 2, 50.0), Variant("b", 3, 50.0)), "header:X-User"),
        shadow=Shadow(3, 5.0),
        history=(1,),
    )
    assert TrafficPolicy.from_dict(original.to_dict()) == original
    assert original.versions_in_use() == {2, 3}

"""Statistics helpers: histogram percentiles, Wilson interval, two-proportion test, draining."""

from __future__ import annotations

import math

from serving.stats import (
    LATENCY_BUCKETS_MS,
    TrafficStats,
    latency_percentile_ms,
    two_proportion_p_value,
    wilson_interval,
)


def test_percentile_is_the_upper_bound_of_the_bucket_holding_it() -> None:
    buckets = {0: 50, 5: 45, len(LATENCY_BUCKETS_MS): 5}
    assert latency_percentile_ms(buckets, 0.5) == LATENCY_BUCKETS_MS[0]
    assert latency_percentile_ms(buckets, 0.95) == LATENCY_BUCKETS_MS[5]
    assert latency_percentile_ms(buckets, 0.99) == math.inf
    assert latency_percentile_ms({}, 0.5) is None


def test_wilson_interval_matches_the_textbook_value() -> None:
    low, high = wilson_interval(8, 10) or (0.0, 0.0)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(0, 0) is None


def test_two_proportion_test_separates_clear_differences_only() -> None:
    assert (two_proportion_p_value(90, 100, 50, 100) or 1) < 1e-6
    assert (two_proportion_p_value(50, 100, 52, 100) or 0) > 0.5
    assert two_proportion_p_value(1, 0, 1, 1) is None


def test_drain_hands_over_counts_once() -> None:
    stats = TrafficStats()
    stats.record_variant("m", "e", "a", 3.2, ["x", "y"], error=False)
    stats.record_shadow("m", 2, agreed=False, score_diff=-0.25)

    counts, records = stats.drain()

    by_metric = {(k.variant, k.metric): v for k, v in counts.items()}
    assert by_metric[("a", "requests")] == 1
    assert by_metric[("a", "label:x")] == 1
    assert by_metric[("shadow", "agreed")] == 0
    assert by_metric[("shadow", "score_diff_micro")] == 250_000
    assert records == []
    assert stats.drain() == ({}, [])

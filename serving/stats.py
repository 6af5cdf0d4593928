"""Per-process traffic statistics for experiments and shadows, drained into a shared store.

Counting happens on the request path, so it only adds to dictionaries under a lock; whoever
owns the shared store (the web layer) drains the deltas periodically and adds them up there,
so that a report covers every worker and replica.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter
from dataclasses import dataclass

# Latency histogram bucket upper bounds in milliseconds (the last bucket is open-ended).
LATENCY_BUCKETS_MS = (
    0.5,
    1,
    2,
    3,
    5,
    7.5,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    150,
    200,
    300,
    500,
    750,
    1000,
    2000,
    5000,
)


@dataclass(frozen=True)
class CounterKey:
    model: str
    experiment: str  # the experiment's name, or "shadow:<version>"
    variant: str
    metric: str


@dataclass(frozen=True)
class PredictionRecord:
    """What an experiment request got, kept so that feedback can be matched to it later."""

    request_id: str
    model: str
    experiment: str
    variant: str
    version: int
    label: str | None


class TrafficStats:
    """Thread-safe counters; ``drain`` hands over what accumulated since the last drain."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[CounterKey] = Counter()
        self._records: list[PredictionRecord] = []

    def log_prediction(self, record: PredictionRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _add(self, key: CounterKey, amount: int = 1) -> None:
        with self._lock:
            self._counts[key] += amount

    def record_variant(
        self,
        model: str,
        experiment: str,
        variant: str,
        latency_ms: float,
        labels: list[str] | None,
        error: bool,
    ) -> None:
        def key(metric: str) -> CounterKey:
            return CounterKey(model, experiment, variant, metric)

        bucket = bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)
        with self._lock:
            self._counts[key("requests")] += 1
            self._counts[key(f"latency_bucket:{bucket}")] += 1
            if error:
                self._counts[key("errors")] += 1
            for label in labels or ():
                self._counts[key(f"label:{label}")] += 1

    def record_shadow(self, model: str, version: int, agreed: bool, score_diff: float) -> None:
        key = f"shadow:{version}"
        with self._lock:
            self._counts[CounterKey(model, key, "shadow", "compared")] += 1
            self._counts[CounterKey(model, key, "shadow", "agreed")] += int(agreed)
            # Stored as an integer sum of micro-units so any store can add it atomically.
            self._counts[CounterKey(model, key, "shadow", "score_diff_micro")] += round(
                abs(score_diff) * 1_000_000
            )

    def record_shadow_error(self, model: str, version: int) -> None:
        self._add(CounterKey(model, f"shadow:{version}", "shadow", "errors"))

    def record_shadow_dropped(self, model: str, version: int) -> None:
        """A shadow copy skipped because earlier ones were still running."""
        self._add(CounterKey(model, f"shadow:{version}", "shadow", "dropped"))

    def drain(self) -> tuple[dict[CounterKey, int], list[PredictionRecord]]:
        with self._lock:
            counts, self._counts = dict(self._counts), Counter()
            records, self._records = self._records, []
        return counts, records


def latency_percentile_ms(buckets: dict[int, int], quantile: float) -> float | None:
    """The upper bound of the histogram bucket holding ``quantile`` of the requests."""
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = quantile * total
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            if index < len(LATENCY_BUCKETS_MS):
                return LATENCY_BUCKETS_MS[index]
            return math.inf
    return math.inf


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float] | None:
    """95 % Wilson score interval of a proportion (sound for small samples and 0 or 1)."""
    if trials == 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p_value(s1: int, n1: int, s2: int, n2: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test (no difference under H0)."""
    if n1 == 0 or n2 == 0:
        return None
    pooled = (s1 + s2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance == 0:
        return 1.0
    z = (s1 / n1 - s2 / n2) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))

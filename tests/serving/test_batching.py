"""Batcher: concurrent requests merged into one runtime call; queue limits; failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import numpy as np
import pytest

from serving.batching import SOLO_BATCHES_BEFORE_NO_WAIT, Batcher, Overloaded


class Recorder:
    """A runtime stand-in: doubles its input, remembers batch sizes, can block or fail."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_when: int | None = None

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.gate.wait(5)
        x = inputs["x"]
        self.sizes.append(x.shape[0])
        if self.fail_when is not None and self.fail_when in x[:, 0]:
            raise RuntimeError("bad batch")
        return {"y": x * 2}


def submit_all(batcher: Batcher, values: list[float]) -> dict[float, object]:
    results: dict[float, object] = {}

    def one(value: float) -> None:
        try:
            results[value] = batcher.submit({"x": np.full((1, 2), value)})["y"][0, 0]
        except Exception as err:  # noqa: BLE001 - the test looks at what each caller got
            results[value] = err

    threads = [threading.Thread(target=one, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_concurrent_requests_share_a_runtime_call_and_get_their_own_rows() -> None:
    runtime = Recorder()
    batcher = Batcher(runtime, max_batch_size=8, max_batch_delay_ms=50, max_queue_size=64, name="t")
    runtime.gate.clear()  # hold the first call so the others queue up behind it
    results: dict[float, object] = {}
    first = threading.Thread(target=lambda: results.update(submit_all(batcher, [0.0])))
    first.start()
    time.sleep(0.1)
    rest = [float(i) for i in range(1, 9)]
    others = threading.Thread(target=lambda: results.update(submit_all(batcher, rest)))
    others.start()
    time.sleep(0.2)
    runtime.gate.set()
    first.join(10)
    others.join(10)

    assert {v: results[v] for v in range(9)} == {float(v): 2.0 * v for v in range(9)}
    assert runtime.sizes[0] == 1 and max(runtime.sizes[1:]) == 8
    assert batcher.stats.items == 9 and batcher.stats.requests == 9
    batcher.close()


def test_a_lone_request_does_not_wait_when_the_delay_is_zero() -> None:
    runtime = Recorder()
    batcher = Batcher(runtime, max_batch_size=32, max_batch_delay_ms=0, max_queue_size=8, name="t")
    started = time.monotonic()
    out = batcher.submit({"x": np.ones((1, 2))})
    assert time.monotonic() - started < 0.05
    assert out["y"].tolist() == [[2.0, 2.0]]
    batcher.close()


def timed_submit(batcher: Batcher) -> float:
    started = time.monotonic()
    assert batcher.submit({"x": np.ones((1, 2))})["y"].tolist() == [[2.0, 2.0]]
    return time.monotonic() - started


def test_a_lone_client_stops_paying_the_delay_after_a_run_of_solo_batches() -> None:
    runtime = Recorder()
    batcher = Batcher(runtime, max_batch_size=8, max_batch_delay_ms=200, max_queue_size=8, name="t")

    first = [timed_submit(batcher) for _ in range(SOLO_BATCHES_BEFORE_NO_WAIT)]
    later = [timed_submit(batcher) for _ in range(3)]

    assert min(first) >= 0.15  # waited for partners that never came
    assert max(later) < 0.1
    assert runtime.sizes == [1] * (SOLO_BATCHES_BEFORE_NO_WAIT + 3)
    batcher.close()


def test_waiting_for_partners_resumes_once_requests_overlap_again() -> None:
    runtime = Recorder()
    batcher = Batcher(runtime, max_batch_size=8, max_batch_delay_ms=200, max_queue_size=8, name="t")
    for _ in range(SOLO_BATCHES_BEFORE_NO_WAIT):
        timed_submit(batcher)
    assert timed_submit(batcher) < 0.1  # no longer waiting

    runtime.gate.clear()  # hold one call so that the next three queue up behind it
    held = threading.Thread(target=timed_submit, args=(batcher,))
    held.start()
    time.sleep(0.1)
    overlapping = [threading.Thread(target=timed_submit, args=(batcher,)) for _ in range(3)]
    for thread in overlapping:
        thread.start()
    time.sleep(0.1)
    runtime.gate.set()
    for thread in [held, *overlapping]:
        thread.join(10)

    assert runtime.sizes[-2:] == [1, 3]
    assert timed_submit(batcher) >= 0.15  # waits for partners again
    batcher.close()


def test_a_full_queue_answers_overloaded_at_once() -> None:
    runtime = Recorder()
    runtime.gate.clear()
    batcher = Batcher(runtime, max_batch_size=1, max_batch_delay_ms=0, max_queue_size=2, name="t")
    waiting = [
        threading.Thread(target=batcher.submit, args=({"x": np.ones((1, 2))},)) for _ in range(3)
    ]
    waiting[0].start()
    time.sleep(0.1)  # the owner took it and is held by the gate
    for thread in waiting[1:]:
        thread.start()
    time.sleep(0.1)  # two more queued: the queue is full

    started = time.monotonic()
    with pytest.raises(Overloaded):
        batcher.submit({"x": np.ones((1, 2))})
    assert time.monotonic() - started < 0.05
    assert batcher.stats.rejected == 1
    runtime.gate.set()
    for thread in waiting:
        thread.join(10)
    batcher.close()


def test_a_runtime_failure_reaches_only_the_requests_of_that_batch() -> None:
    runtime = Recorder()
    runtime.fail_when = 3.0
    batcher = Batcher(runtime, max_batch_size=2, max_batch_delay_ms=20, max_queue_size=64, name="t")

    results = submit_all(batcher, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])

    failed = {v for v, r in results.items() if isinstance(r, RuntimeError)}
    assert 3.0 in failed and len(failed) <= 2
    assert all(results[v] == 2 * v for v in results if v not in failed)
    assert batcher.stats.failed_batches == 1
    batcher.close()

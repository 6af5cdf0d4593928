"""bench/batching.py's own logic: toggling [batching] in a copy, pooling windows, the delay."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.batching import (
    Cell,
    VersionReport,
    add_batched_copies,
    choose_delay,
    copy_models,
    judge,
    pool,
    served_version,
    set_batching,
)
from bench.loadgen import LoadResult
from bench.throughput import Target
from serving.manifest import BatchingSpec, VersionSpec, load_model_defaults, load_version

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


def spec_of(root: Path, model: str, version: int) -> VersionSpec:
    defaults = load_model_defaults(root / model)
    return load_version(model, root / model / str(version), defaults)


def test_copies_serve_each_version_off_and_once_per_delay_on(tmp_path: Path) -> None:
    root = tmp_path / "models"
    copy_models(REPO_MODELS, root, ["iris"])
    original = spec_of(root, "iris", 1)
    target = Target("iris", 1, original, runtime=None)

    count = add_batched_copies(root, [target], [0.0, 2.5], queue_size=16)

    assert count == len(list((REPO_MODELS / "iris").glob("*/manifest.toml"))) + 2
    assert original.batching is None
    on = [spec_of(root, "iris", served_version(1, i)) for i in (1, 2)]
    assert [s.batching for s in on] == [
        BatchingSpec(max_batch_delay_ms=0.0, max_queue_size=16),
        BatchingSpec(max_batch_delay_ms=2.5, max_queue_size=16),
    ]
    assert not (root / "digits").exists()
    assert (REPO_MODELS / "iris" / "1" / "manifest.toml").read_text().count("[batching]") == 0


def test_an_existing_batching_table_is_replaced_not_duplicated(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        'runtime = "tflite"\n\n[batching]\nmax_batch_delay_ms = 9\n\n[provenance]\nseed = 0\n'
    )

    set_batching(manifest, 1.0, 8)
    text = manifest.read_text()
    assert text.count("[batching]") == 1 and "max_batch_delay_ms = 1\n" in text
    assert "[provenance]\nseed = 0" in text

    set_batching(manifest, None, 8)
    assert "batching" not in manifest.read_text()


def test_batching_declared_inline_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('runtime = "tflite"\nbatching = { max_batch_delay_ms = 1 }\n')
    with pytest.raises(SystemExit):
        set_batching(manifest, None, 8)


def test_pooled_windows_add_requests_and_weight_cpu_by_time() -> None:
    first = LoadResult(clients=4, seconds=1.0, requests=100, server_cpu_percent=100.0)
    second = LoadResult(clients=4, seconds=3.0, requests=500, server_cpu_percent=60.0)

    pooled = pool([first, second], [0.001] * 50 + [0.003] * 50)

    assert pooled.requests == 600 and pooled.items_per_second == 150
    assert pooled.server_cpu_percent == pytest.approx(70.0)
    assert pooled.p50_ms == pytest.approx(2.0)


def pair(
    clients: int, delay: float | None, p50: tuple[float, float], cpu: tuple[float, float]
) -> Cell:
    cell = Cell("m", 1, "tflite", "binary", clients, delay)
    cell.off = LoadResult(clients=clients, seconds=1.0, p50_ms=p50[0])
    cell.on = LoadResult(clients=clients, seconds=1.0, p50_ms=p50[1])
    cell.off_cpu_ms, cell.on_cpu_ms = cpu
    return cell


def test_the_chosen_delay_saves_cpu_and_keeps_a_lone_client_within_budget() -> None:
    sweep = [
        pair(1, 0.0, (3.0, 3.1), (3.0, 3.0)),
        pair(1, 2.0, (3.0, 3.5), (3.0, 3.0)),
        pair(1, 5.0, (3.0, 8.5), (3.0, 3.0)),  # the lone client pays 5.5 ms: out
        pair(32, 0.0, (90, 90), (4.0, 4.0)),
        pair(32, 2.0, (90, 90), (4.0, 3.4)),
        pair(32, 5.0, (90, 90), (4.0, 3.0)),
    ]
    assert choose_delay(sweep) == 2.0


def test_a_smaller_delay_within_the_noise_of_the_best_wins() -> None:
    sweep = [
        pair(1, 0.0, (3.0, 3.0), (3.0, 3.0)),
        pair(1, 2.0, (3.0, 3.0), (3.0, 3.0)),
        pair(32, 0.0, (90, 90), (4.0, 3.9)),
        pair(32, 2.0, (90, 90), (4.0, 3.8)),
    ]
    assert choose_delay(sweep) == 0.0


def test_the_smallest_delay_when_batching_cannot_save_more_than_the_noise() -> None:
    sweep = [
        pair(1, 0.0, (3.0, 3.0), (3.0, 3.0)),
        pair(1, 5.0, (3.0, 3.0), (3.0, 3.0)),
        pair(32, 0.0, (90, 90), (4.0, 4.0)),
        pair(32, 5.0, (90, 90), (4.0, 3.0)),  # a 25% saving the runtime cannot give
    ]
    assert choose_delay(sweep, max_cpu_saving=0.01) == 0.0
    assert choose_delay(sweep, max_cpu_saving=0.3) == 5.0


def report_with(gain: float, aa_cpu: float, raw_saving_ms: float) -> VersionReport:
    """A SavedModel version whose on cells cost ``1 / gain`` of off's CPU per item."""
    report = VersionReport("m", 1, "savedmodel", raw_saving_ms=raw_saving_ms, chosen_delay_ms=0)
    report.sweep.append(pair(32, None, (90, 90), (4.0, 4.0 * aa_cpu)))
    for clients in (1, 8, 32):
        cell = pair(clients, 0.0, (3.0, 3.1), (4.0, 4.0 / gain))
        assert cell.off is not None and cell.on is not None
        cell.off.items_per_second, cell.on.items_per_second = 100.0, 100.0 * gain
        cell.on_over_off = gain
        report.grid.append(cell)
    return report


def test_the_suggestion_turns_batching_on_only_for_a_gain_beyond_noise_and_ceiling() -> None:
    clear = report_with(gain=1.25, aa_cpu=1.02, raw_saving_ms=1.0)
    within_noise = report_with(gain=1.05, aa_cpu=1.10, raw_saving_ms=1.0)
    beyond_ceiling = report_with(gain=1.25, aa_cpu=1.02, raw_saving_ms=0.01)

    for report in (clear, within_noise, beyond_ceiling):
        judge(report)

    assert clear.suggestion.startswith("[batching] max_batch_delay_ms = 0")
    assert within_noise.suggestion.startswith("no [batching] table")
    assert "no more than off against itself" in within_noise.suggestion
    assert beyond_ceiling.suggestion.startswith("no [batching] table: the runtime is too small")
    assert any(v.startswith("on >= 1.5x off at 32 clients: NOT MET") for v in clear.verdicts)

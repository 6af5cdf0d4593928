"""`flask models optimize | import | report` as an operator runs them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from deployments import store
from tests.toy_model import Toy

MANIFEST = """runtime = "fake"
artifact = "model.bin"

[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 3]

[[outputs]]
name = "y"
datatype = "FP32"
shape = [-1, 2]

[provenance]
{provenance}
"""


@pytest.fixture
def cli_app(make_app: Callable[..., Flask]) -> Callable[[Path], Flask]:
    def make(root: Path) -> Flask:
        return make_app(root=root, START_SERVING=False)

    return make


def write_version(root: Path, number: int, provenance: str, size: int) -> None:
    version = root / "tab" / str(number)
    version.mkdir(parents=True)
    (version / "model.bin").write_bytes(b"0" * size)
    (version / "manifest.toml").write_text(MANIFEST.format(provenance=provenance))


def test_report_prints_every_version_with_format_size_latency_accuracy_lineage(
    tmp_path: Path, cli_app: Callable[[Path], Flask]
) -> None:
    root = tmp_path / "repo2"
    write_version(
        root, 1, "holdout_accuracy = 0.98\nholdout_size = 360\nartifact_bytes = 4000", 4000
    )
    write_version(
        root,
        2,
        'derived_from = "tab/1"\nmode = "int8"\nholdout_accuracy = 0.975\nholdout_size = 360\n'
        "latency_single_ms = 0.0123\nlatency_batch_ms = 0.2\nartifact_bytes = 1000",
        1000,
    )

    result = cli_app(root).test_cli_runner().invoke(args=["models", "report", "tab"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "version", "format", "size", "latency", "1", "item", "latency", "batch", "accuracy", "from"
    ]  # fmt: skip
    assert lines[1].split() == ["1", "fake", "4,000", "B", "-", "-", "98.00%", "(n=360)", "-"]
    assert lines[2].split() == [
        "2", "fake", "int8", "1,000", "B", "0.0123", "ms", "0.2", "ms", "97.50%", "(n=360)",
        "tab/1",
    ]  # fmt: skip


def test_optimize_refuses_a_tflite_source_with_a_clear_message(
    tmp_path: Path, cli_app: Callable[[Path], Flask]
) -> None:
    root = tmp_path / "repo2"
    write_version(root, 1, "", 10)
    manifest = root / "tab" / "1" / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('"fake"', '"tflite"'))

    result = (
        cli_app(root)
        .test_cli_runner()
        .invoke(args=["models", "optimize", "tab", "--from", "1", "--mode", "int8"])
    )

    assert result.exit_code == 1
    assert "Error: tab version 1 is tflite; optimize from a Keras model file" in result.output
    assert sorted(p.name for p in (root / "tab").iterdir()) == ["1"]


def test_optimize_offers_the_modes_and_needs_a_source(
    tmp_path: Path, cli_app: Callable[[Path], Flask]
) -> None:
    runner = cli_app(tmp_path / "models").test_cli_runner()
    bad_mode = runner.invoke(args=["models", "optimize", "tab", "--from", "1", "--mode", "int4"])
    no_source = runner.invoke(args=["models", "optimize", "tab", "--mode", "int8"])
    assert bad_mode.exit_code == 2 and "'float16', 'dynamic', 'int8'" in bad_mode.output
    assert no_source.exit_code == 2 and "--from" in no_source.output


@pytest.fixture
def toy_root(toy: Toy, tmp_path: Path) -> Path:
    return Path(shutil.copytree(toy.root, tmp_path / "toy-models"))


@pytest.mark.slow
def test_optimize_with_canary_publishes_and_sends_it_traffic(
    toy_root: Path, cli_app: Callable[[Path], Flask]
) -> None:
    app = cli_app(toy_root)

    result = app.test_cli_runner().invoke(
        args=["models", "optimize", "toy", "--from", "1", "--mode", "int8", "--canary", "10"]
    )

    assert result.exit_code == 0, result.output
    assert "toy version 2 written to" in result.output
    assert "training-only ops left in the served graph: none" in result.output
    assert "canary: 10 % of toy traffic goes to version 2" in result.output
    assert (toy_root / "toy" / "2" / "model.tflite").exists()
    with app.app_context():
        policy = store.current("toy")
        assert policy.labels == {"stable": 1, "canary": 2}
        assert dict(policy.weights) == {1: 90.0, 2: 10.0}
        assert [r.action for r in store.audit("toy")] == ["canary", "seed"]


@pytest.mark.slow
def test_optimize_gate_failure_exits_non_zero_and_writes_nothing(
    toy: Toy, toy_root: Path, cli_app: Callable[[Path], Flask]
) -> None:
    result = (
        cli_app(toy_root)
        .test_cli_runner()
        .invoke(args=["models", "optimize", "toy", "--from", str(toy.damaged), "--mode", "int8"])
    )

    assert result.exit_code == 1
    assert "Error: the int8 version loses" in result.output
    assert "the limit is 1.00. Nothing was written." in result.output
    assert sorted(p.name for p in (toy_root / "toy").iterdir()) == [
        "1",
        "calibration.npz",
        "holdout.npz",
        "model.toml",
    ]
    assert not [p for p in toy_root.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_import_prints_the_manifest_to_review(
    toy: Toy, toy_root: Path, cli_app: Callable[[Path], Flask]
) -> None:
    result = (
        cli_app(toy_root)
        .test_cli_runner()
        .invoke(args=["models", "import", str(toy.good), "--name", "other"])
    )

    assert result.exit_code == 0, result.output
    assert "other version 1 (keras) written to" in result.output
    assert 'name = "features"' in result.output
    assert "name the\n#   features in the order the model was trained on" in result.output
    assert (toy_root / "other" / "1" / "manifest.toml").exists()

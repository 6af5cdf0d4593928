"""Optimizing a model end to end on a tiny Keras model: what gets published, what is refused."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from serving.errors import AccuracyGateFailed, ImportFailed, TrainingOpsRemain
from serving.manifest import load_model_defaults, load_version
from serving.modelimport import import_model
from serving.optimize import OptimizeResult, evaldata, optimize
from serving.optimize.graph import tflite_ops, training_ops_in_tflite
from serving.optimize.measure import measure
from serving.runtimes import default_factories
from serving.service import InferenceService
from serving.settings import ServingSettings
from tests.toy_model import LABELS, Toy

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(toy: Toy, tmp_path: Path) -> Path:
    """A private copy of the toy repository (version 1 only)."""
    return Path(shutil.copytree(toy.root, tmp_path / "models"))


@pytest.fixture(scope="module")
def int8(toy: Toy, tmp_path_factory: pytest.TempPathFactory) -> OptimizeResult:
    """toy version 2: int8 from the SavedModel version 1. Tests only read it."""
    root = Path(shutil.copytree(toy.root, tmp_path_factory.mktemp("int8") / "models"))
    return optimize(root, "toy", 1, "int8")


def entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_int8_version_is_served_and_predicts_the_holdout_labels(int8: OptimizeResult) -> None:
    root = int8.path.parent.parent
    holdout = evaldata.load(
        root / "toy", "holdout", load_version("toy", int8.path, load_model_defaults(root)).inputs
    )
    assert holdout.labels is not None
    features = [
        {f"feature_{i}": float(v) for i, v in enumerate(row)} for row in holdout.inputs["features"]
    ]
    service = InferenceService(
        ServingSettings(model_root=root, load_in_background=False), default_factories()
    )
    service.start()
    try:
        results = [
            service.predict("toy", features[i : i + 100], version=int8.version)
            for i in range(0, len(features), 100)
        ]
    finally:
        service.stop()

    predicted = [LABELS.index(p.label) for r in results for p in r.predictions]
    accuracy = float(np.mean(np.asarray(predicted) == holdout.labels))
    assert {r.version for r in results} == {2}
    assert accuracy >= 0.95
    # What a user gets through the server is what the manifest claims.
    assert accuracy == pytest.approx(int8.result.accuracy, abs=1e-6)


def test_manifest_records_lineage_and_figures_a_remeasurement_reproduces(
    int8: OptimizeResult,
) -> None:
    manifest = tomllib.loads((int8.path / "manifest.toml").read_text())
    facts = manifest["provenance"]
    spec = load_version("toy", int8.path, load_model_defaults(int8.path.parent))
    again = measure(spec, evaldata.load(int8.path.parent, "holdout", spec.inputs))

    assert manifest["runtime"] == "tflite"
    assert facts["derived_from"] == "toy/1"
    assert facts["mode"] == "int8"
    assert facts["created"][:4].isdigit() and "T" in facts["created"]
    assert facts["calibration"] == "calibration.npz (100 samples)"
    assert facts["holdout_accuracy"] >= facts["source_holdout_accuracy"] - 0.01
    assert facts["source_holdout_accuracy"] >= 0.95
    assert facts["training_ops_remaining"] == []
    assert facts["artifact_bytes"] == again.artifact_bytes == spec.artifact.stat().st_size
    assert facts["holdout_accuracy"] == pytest.approx(again.accuracy, abs=1e-6)
    assert facts["holdout_size"] == again.holdout_size == 300
    # Latency on a shared 2-core machine: the same order of magnitude, not the same digits.
    for key, value in (
        ("latency_single_ms", again.latency_single_ms),
        ("latency_batch_ms", again.latency_batch_ms),
    ):
        assert value / 4 <= facts[key] <= value * 4, (key, facts[key], value)
    assert facts["source_artifact_bytes"] > 3 * facts["artifact_bytes"]


def test_no_training_op_in_the_int8_graph(int8: OptimizeResult) -> None:
    ops = tflite_ops((int8.path / "model.tflite").read_bytes())
    assert "FULLY_CONNECTED" in ops
    assert training_ops_in_tflite(ops) == []
    assert int8.ops.remaining == ()


def test_gate_refuses_weights_that_do_not_survive_quantization_and_writes_nothing(
    toy: Toy, repo: Path
) -> None:
    before = entries(repo)

    with pytest.raises(AccuracyGateFailed) as failure:
        optimize(repo, "toy", toy.damaged, "int8")

    assert "percentage points of holdout accuracy" in failure.value.message
    assert "Nothing was written" in failure.value.message
    assert failure.value.details["source_accuracy"] >= 0.95
    assert failure.value.details["result_accuracy"] < 0.9
    assert entries(repo) == before


def test_the_same_damaged_model_passes_in_float16_where_nothing_is_lost(
    toy: Toy, repo: Path
) -> None:
    result = optimize(repo, "toy", toy.damaged, "float16")

    assert result.version == 2
    assert result.accuracy_drop <= 0.01
    assert result.derived_from.startswith("damaged.keras (sha256 ")


def test_a_keras_source_loses_dropout_noise_and_batch_norm(toy: Toy, repo: Path) -> None:
    result = optimize(repo, "toy", toy.good, "dynamic")

    removed = "\n".join(result.ops.removed)
    assert "dropout / random" in removed and "StatelessRandomUniformV2" in removed
    assert "batch norm" in removed and "variable update" in removed
    for layer in ("gaussian_noise (GaussianNoise)", "dropout (Dropout)"):
        assert layer in removed
    served = tflite_ops((result.path / "model.tflite").read_bytes())
    assert training_ops_in_tflite(served) == []
    assert not any("RANDOM" in op or "Flex" in op for op in served)


def test_import_reads_the_signature_and_the_labels_file(toy: Toy, repo: Path) -> None:
    labels = repo.parent / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")

    result = import_model(repo, toy.good, "fresh", labels_file=labels)

    manifest = tomllib.loads(result.manifest)
    assert (result.version, result.source_format) == (1, "keras")
    assert manifest["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 5]}]
    assert manifest["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}]
    assert manifest["preprocess"][0]["names"] == [f"feature_{i}" for i in range(5)]
    assert manifest["postprocess"]["labels"] == LABELS
    assert result.manifest.startswith("# Imported by `flask models import` from good.keras")
    assert (repo / "fresh" / "1" / "saved_model" / "saved_model.pb").exists()


def test_import_of_a_tflite_file_and_a_wrong_labels_file(int8: OptimizeResult, repo: Path) -> None:
    labels = repo.parent / "labels.txt"
    labels.write_text("only\ntwo\n")
    before = entries(repo)

    with pytest.raises(ImportFailed, match="2 labels; output 'logits' scores 3 classes"):
        import_model(repo, int8.path / "model.tflite", "toy", labels_file=labels)
    assert entries(repo) == before

    result = import_model(repo, int8.path / "model.tflite", "toy")
    assert (result.version, result.source_format) == (2, "tflite")
    assert tomllib.loads(result.manifest)["runtime"] == "tflite"


def test_a_graph_that_samples_at_inference_is_refused(repo: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    class Noisy(tf.Module):
        def __init__(self) -> None:
            self.kernel = tf.Variable(np.eye(5, 3, dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.float32, name="features")])
        def serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"logits": tf.matmul(features, self.kernel) + tf.random.uniform([3])}

    noisy = Noisy()
    tf.saved_model.save(noisy, str(tmp_path / "noisy"), signatures={"serving_default": noisy.serve})
    before = entries(repo)

    with pytest.raises(TrainingOpsRemain, match="RANDOM_UNIFORM"):
        optimize(repo, "toy", tmp_path / "noisy", "float32")
    assert entries(repo) == before

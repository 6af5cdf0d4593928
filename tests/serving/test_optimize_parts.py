"""The optimizer's parts that need no TensorFlow: graph checks, evaluation data, publishing,
the version report, and the refusals that happen before any conversion."""

from __future__ import annotations

import shutil
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from serving.errors import (
    EvaluationDataError,
    InvalidInput,
    ModelNotFound,
    UnsupportedSource,
    VersionNotFound,
)
from serving.manifest import TensorSpec
from serving.optimize import evaldata, optimize
from serving.optimize.graph import category, describe, tflite_ops, training_nodes
from serving.optimize.graph import training_ops_in_tflite as training_ops
from serving.optimize.publish import publish, staging
from serving.optimize.report import version_report
from serving.tomlwrite import dumps_toml
from tests.conftest import BUNDLED_MODELS

PIXELS = (TensorSpec("pixels", "FP32", (-1, 8, 8, 1)),)


@pytest.fixture
def digits(tmp_path: Path) -> Path:
    """A copy of the bundled digits model (versions 1 and 2) under a model root."""
    root = tmp_path / "models"
    shutil.copytree(BUNDLED_MODELS / "digits", root / "digits")
    return root


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("name", "op", "expected"),
    [
        ("m/dropout_1/stateless_dropout/GreaterEqual", "GreaterEqual", "dropout / random"),
        ("m/noise/stateless_random_normal/X", "StatelessRandomNormalV2", "dropout / random"),
        ("m/gaussian_noise_1/add_1", "AddV2", "dropout / random"),
        ("m/bn/batchnorm/Rsqrt", "Rsqrt", "batch norm"),
        ("m/bn/moments/mean", "Mean", "batch norm"),
        ("m/FusedBatchNormV3", "FusedBatchNormV3", "batch norm"),
        ("m/bn/AssignVariableOp", "AssignVariableOp", "variable update"),
        ("m/cond", "StatelessIf", "training branch"),
        ("m/dense/MatMul", "MatMul", None),
        ("m/bn/batchnorm/add/y", "Const", None),
    ],
)
def test_graph_nodes_fall_into_training_only_categories(
    name: str, op: str, expected: str | None
) -> None:
    assert category(name, op) == expected


def test_removed_ops_are_described_per_category_with_their_fate() -> None:
    found = training_nodes([("a/batchnorm/Rsqrt", "Rsqrt"), ("a/batchnorm/mul", "Mul")] * 2)
    assert describe(found, ["bn (BatchNormalization)"]) == [
        "batch norm: 4 ops (Rsqrt x2, Mul x2): folded into constant weights",
        "Keras layers active only in training: bn (BatchNormalization)",
    ]


def test_tflite_check_flags_sampling_and_flex_training_ops() -> None:
    ops = Counter(
        {"FULLY_CONNECTED": 2, "RANDOM_UNIFORM": 1, "FlexStatelessRandomUniformV2": 1, "ADD": 1}
    )
    assert training_ops(ops) == ["FlexStatelessRandomUniformV2", "RANDOM_UNIFORM"]
    assert training_ops(Counter({"CONV_2D": 3, "MEAN": 1})) == []


def test_no_dropout_or_random_op_remains_in_any_served_tflite_graph() -> None:
    served = []
    for manifest in sorted(BUNDLED_MODELS.glob("*/*/manifest.toml")):
        data = tomllib.loads(manifest.read_text())
        if data["runtime"] != "tflite":
            continue
        ops = tflite_ops((manifest.parent / data["artifact"]).read_bytes())
        served.append(manifest.parent)
        assert ops, manifest
        assert training_ops(ops) == [], manifest
    # digits 2 and shapes 2 were trained with Dropout (and batch norm): they are among them.
    assert {(p.parent.name, p.name) for p in served} >= {("digits", "2"), ("shapes", "2")}


def test_a_model_without_a_declared_holdout_is_told_how_to_declare_one(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(EvaluationDataError, match=r'add `holdout = "holdout.npz"`'):
        evaldata.load(tmp_path / "m", "holdout", PIXELS)


def test_declared_data_must_fit_the_input_signature(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.toml").write_text('holdout = "h.npz"\n')
    np.savez(model_dir / "h.npz", x=np.zeros((4, 8, 8)), y=np.zeros(4))
    with pytest.raises(EvaluationDataError, match=r"rows have shape \[8, 8\].*\[8, 8, 1\]"):
        evaldata.load(model_dir, "holdout", PIXELS)

    np.savez(model_dir / "h.npz", x=np.zeros((4, 8, 8, 1)))
    with pytest.raises(EvaluationDataError, match="needs labels"):
        evaldata.load(model_dir, "holdout", PIXELS)

    np.savez(model_dir / "h.npz", x=np.zeros((4, 8, 8, 1)), y=[1, 2, 3, 4])
    loaded = evaldata.load(model_dir, "holdout", PIXELS)
    assert len(loaded) == 4 and loaded.inputs["pixels"].dtype == np.float32


def test_generators_come_from_the_training_scripts_only(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.toml").write_text('[calibration]\ngenerator = "os:getcwd"\n')
    with pytest.raises(EvaluationDataError, match=r"training\.<script>:<function>"):
        evaldata.load(model_dir, "calibration", PIXELS)


def test_bundled_models_declare_holdout_and_calibration_that_fit_them() -> None:
    shapes = (TensorSpec("image", "FP32", (-1, 64, 64, 3)),)
    calibration = evaldata.load(BUNDLED_MODELS / "shapes", "calibration", shapes)
    digits = evaldata.load(BUNDLED_MODELS / "digits", "holdout", PIXELS)
    assert len(calibration) == 240 and calibration.origin == "training.shapes:calibration_set"
    assert float(calibration.inputs["image"].max()) <= 1.0
    assert len(digits) == 360 and digits.labels is not None
    for model in ("digits", "iris"):
        for name in ("holdout.npz", "calibration.npz"):
            assert (BUNDLED_MODELS / model / name).stat().st_size < 1_000_000


def test_publish_takes_the_next_free_number_in_one_rename(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "7").mkdir()
    with staging(tmp_path, "test") as stage:
        (stage / "1").mkdir()
        (stage / "1" / "manifest.toml").write_text("x")
        assert publish(stage / "1", model_dir) == 8
    assert (model_dir / "8" / "manifest.toml").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # the staging directory is gone


def test_a_tflite_version_is_refused_as_a_source_and_nothing_is_written(digits: Path) -> None:
    before = tree(digits)
    with pytest.raises(UnsupportedSource, match="version 2 is tflite; optimize from a Keras"):
        optimize(digits, "digits", 2, "int8")
    assert tree(digits) == before


def test_int8_needs_declared_calibration_samples(digits: Path) -> None:
    (digits / "digits" / "model.toml").write_text('holdout = "holdout.npz"\n')
    with pytest.raises(EvaluationDataError, match="declares no calibration set"):
        optimize(digits, "digits", 1, "int8")
    assert not [p for p in digits.iterdir() if p.name.startswith(".")]


def test_unknown_models_versions_and_modes_are_refused(digits: Path) -> None:
    with pytest.raises(ModelNotFound):
        optimize(digits, "nope", 1, "int8")
    with pytest.raises(VersionNotFound):
        optimize(digits, "digits", 9, "int8")
    with pytest.raises(InvalidInput, match="unknown mode 'int4'"):
        optimize(digits, "digits", 1, "int4")
    with pytest.raises(InvalidInput):
        optimize(digits, "../digits", 1, "int8")


def test_report_lists_every_version_from_its_manifest(digits: Path) -> None:
    rows = version_report(digits, "digits")
    assert [(r.version, r.format, r.accuracy, r.derived_from) for r in rows[:2]] == [
        (1, "savedmodel", 0.9806, None),
        (2, "tflite", 0.9944, None),
    ]
    assert rows[1].artifact_bytes == (digits / "digits" / "2" / "model.tflite").stat().st_size
    assert all(r.problem is None for r in rows)


def test_report_flags_a_manifest_whose_size_is_wrong(digits: Path) -> None:
    manifest = digits / "digits" / "2" / "manifest.toml"
    text = manifest.read_text().replace("artifact_bytes = 253748", "artifact_bytes = 1")
    manifest.write_text(text)
    (row,) = [r for r in version_report(digits, "digits") if r.version == 2]
    assert row.problem == "manifest says 1 bytes"


def test_toml_writer_round_trips_what_manifests_hold() -> None:
    data = {
        "runtime": "tflite",
        "quoted": 'a "b" \\ c\n',
        "n": 3,
        "f": 0.1,
        "empty": [],
        "inputs": [{"name": "x", "shape": [-1, 4]}],
        "provenance": {"ops_removed": ["batch norm: 4 ops"], "ok": True},
    }
    assert tomllib.loads(dumps_toml(data)) == data

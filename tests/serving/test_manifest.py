from __future__ import annotations

from pathlib import Path

import pytest

from serving.errors import ManifestError
from serving.manifest import (
    ModelDefaults,
    VersionPolicy,
    load_model_defaults,
    load_version,
    version_dirs,
)
from tests import fake_repo

VALID = fake_repo.TAB_MANIFEST.format(max_batch_size=8)


def write(tmp_path: Path, manifest: str, version: int = 1) -> Path:
    return fake_repo.write_version(tmp_path, "m", version, manifest)


def edited(old: str, new: str) -> str:
    assert old in VALID, f"test setup: {old!r} is not in the manifest"
    return VALID.replace(old, new, 1)


def test_valid_manifest_parses_into_a_version_spec(tmp_path: Path) -> None:
    spec = load_version("m", write(tmp_path, VALID, version=4), ModelDefaults())

    assert (spec.model, spec.version, spec.runtime) == ("m", 4, "fake")
    assert spec.artifact == tmp_path / "m" / "4" / "model.bin"
    assert [(t.name, t.datatype, t.shape) for t in spec.inputs] == [("x", "FP32", (-1, 3))]
    assert spec.outputs[0].item_shape == (3,)
    assert spec.preprocess[0].step == "features"
    assert spec.preprocess[0].to_dict() == {
        "step": "features",
        "names": ["a", "b", "c"],
        "defaults": {"c": 0.0},
    }
    assert spec.postprocess is not None
    assert (spec.postprocess.output, spec.postprocess.top_k) == ("scores", 2)
    assert spec.postprocess.softmax is False
    assert spec.max_batch_size == 8
    assert spec.provenance["dataset"] == "none"


def test_max_batch_size_defaults_to_32(tmp_path: Path) -> None:
    spec = load_version("m", write(tmp_path, edited("max_batch_size = 8\n", "")), ModelDefaults())

    assert spec.max_batch_size == 32


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        pytest.param("runtime = 'fake'\nartifact = [broken", "not valid TOML", id="bad-toml"),
        pytest.param(edited('runtime = "fake"\n', ""), "'runtime' is required", id="no-runtime"),
        pytest.param(
            edited('runtime = "fake"', "runtime = 3"), "'runtime' has the wrong type", id="runtime"
        ),
        pytest.param(
            edited('datatype = "FP32"', 'datatype = "FLOAT"'),
            "inputs[0]: unknown datatype 'FLOAT'",
            id="datatype",
        ),
        pytest.param(edited("shape = [-1, 3]", "shape = [-1, 0]"), "shape must be", id="zero"),
        pytest.param(edited("shape = [-1, 3]", "shape = []"), "shape must be", id="empty"),
        pytest.param(edited("shape = [-1, 3]", "shape = [-2, 3]"), "shape must be", id="neg"),
        pytest.param(edited("shape = [-1, 3]", 'shape = [-1, "3"]'), "shape must be", id="str"),
        pytest.param(
            edited('artifact = "model.bin"', 'artifact = "missing.bin"'),
            "artifact 'missing.bin' does not exist",
            id="artifact-missing",
        ),
        pytest.param(
            edited("top_k = 2", 'top_k = 2\noutput = "probabilities"'),
            "postprocess output 'probabilities' is not a declared output",
            id="postprocess-output",
        ),
        pytest.param(edited("top_k = 2", 'top_k = "two"'), "top_k must be", id="top-k-str"),
        pytest.param(edited("top_k = 2", "top_k = 0"), "top_k must be", id="top-k-zero"),
        pytest.param(edited("softmax = false", 'softmax = "no"'), "softmax must be", id="softmax"),
        pytest.param(
            edited("top_k = 2", 'top_k = 2\nlabels = "abc"'), "labels must be a list", id="labels"
        ),
        pytest.param(
            edited('[[preprocess]]\nstep = "features"', '[[preprocess]]\nkind = "features"'),
            "preprocess[0]: 'step' is required",
            id="step-name",
        ),
    ],
)
def test_malformed_manifest_raises_manifest_error_naming_the_problem(
    tmp_path: Path, manifest: str, message: str
) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.toml") as caught:
        load_version("m", write(tmp_path, manifest), ModelDefaults())

    assert message in caught.value.message


def test_manifest_without_outputs_is_refused(tmp_path: Path) -> None:
    manifest = VALID.replace('[[outputs]]\nname = "scores"\ndatatype = "FP32"\nshape = [-1, 3]', "")

    with pytest.raises(ManifestError, match="at least one input and one output"):
        load_version("m", write(tmp_path, manifest), ModelDefaults())


def test_missing_manifest_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)

    with pytest.raises(ManifestError, match=r"manifest\.toml is missing"):
        load_version("m", tmp_path / "m" / "1", ModelDefaults())


@pytest.mark.parametrize("artifact", ["../model.bin", "../../outside.bin", "/etc/hostname"])
def test_artifact_outside_the_version_directory_is_refused(tmp_path: Path, artifact: str) -> None:
    # The escaping files exist, so only the containment check can refuse them.
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.bin").write_bytes(b"x")
    (tmp_path / "outside.bin").write_bytes(b"x")
    path = write(tmp_path, edited('artifact = "model.bin"', f'artifact = "{artifact}"'))

    with pytest.raises(ManifestError, match="artifact must be inside the version directory"):
        load_version("m", path, ModelDefaults())


@pytest.mark.parametrize("value", ["0", "-1", '"8"', "2.5", "true"])
def test_max_batch_size_must_be_a_positive_integer(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, edited("max_batch_size = 8", f"max_batch_size = {value}"))

    with pytest.raises(ManifestError, match="max_batch_size must be a positive integer"):
        load_version("m", path, ModelDefaults())


def test_model_toml_labels_reach_the_version_postprocess(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.toml").write_text('description = "d"\nlabels = ["x", "y", "z"]\n')
    defaults = load_model_defaults(tmp_path / "m")

    spec = load_version("m", write(tmp_path, VALID), defaults)

    assert defaults.description == "d"
    assert spec.labels == ("x", "y", "z")


def test_version_labels_override_model_toml_labels(tmp_path: Path) -> None:
    defaults = ModelDefaults(labels=("x", "y", "z"))
    path = write(tmp_path, edited("top_k = 2", 'top_k = 2\nlabels = ["p", "q", "r"]'))

    assert load_version("m", path, defaults).labels == ("p", "q", "r")


def test_model_without_model_toml_gets_empty_defaults(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()

    assert load_model_defaults(tmp_path / "m") == ModelDefaults()


@pytest.mark.parametrize(
    ("model_toml", "message"),
    [
        ('labels = "abc"', "labels must be a list of strings"),
        ("labels = [1, 2]", "labels must be a list of strings"),
        ('version_policy = { policy = "newest" }', "unknown policy 'newest'"),
        ('version_policy = { policy = "latest", count = 0 }', "count must be at least 1"),
        ('version_policy = { policy = "latest" }', "'count' is required"),
        ('version_policy = { policy = "specific", versions = ["a"] }', "list of integers"),
        ("labels = [", "not valid TOML"),
    ],
)
def test_malformed_model_toml_raises_manifest_error(
    tmp_path: Path, model_toml: str, message: str
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.toml").write_text(model_toml)

    with pytest.raises(ManifestError) as caught:
        load_model_defaults(tmp_path / "m")

    assert message in caught.value.message


@pytest.mark.parametrize(
    ("policy", "selected"),
    [
        ("", [1, 2, 5, 10]),
        ('version_policy = { policy = "all" }', [1, 2, 5, 10]),
        ('version_policy = { policy = "latest", count = 1 }', [10]),
        ('version_policy = { policy = "latest", count = 2 }', [5, 10]),
        ('version_policy = { policy = "latest", count = 9 }', [1, 2, 5, 10]),
        ('version_policy = { policy = "specific", versions = [2, 5, 7] }', [2, 5]),
    ],
)
def test_version_policy_selects_the_right_versions(
    tmp_path: Path, policy: str, selected: list[int]
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.toml").write_text(policy)
    for number in (10, 2, 5, 1):  # unordered, and 10 sorts before 2 as a string
        write(tmp_path, VALID, version=number)

    defaults = load_model_defaults(tmp_path / "m")

    assert defaults.version_policy.select(list(version_dirs(tmp_path / "m"))) == selected


def test_version_dirs_ignore_files_and_non_numeric_directories(tmp_path: Path) -> None:
    for name in ("1", "3", "0", "latest", ".tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "2").write_text("a file")

    assert sorted(version_dirs(tmp_path)) == [1, 3]


def test_version_policy_describes_itself_for_the_api() -> None:
    assert VersionPolicy().to_dict() == {"policy": "all"}
    assert VersionPolicy("latest", count=2).to_dict() == {"policy": "latest", "count": 2}
    assert VersionPolicy("specific", versions=(1, 3)).to_dict() == {
        "policy": "specific",
        "versions": [1, 3],
    }


@pytest.mark.parametrize("threshold", ["high", 1.5, -0.1, True])
def test_a_threshold_outside_zero_to_one_is_refused(tmp_path: Path, threshold: object) -> None:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "model.bin").write_bytes(b"x")
    value = f'"{threshold}"' if isinstance(threshold, str) else str(threshold).lower()
    (version / "manifest.toml").write_text(
        'runtime = "fake"\nartifact = "model.bin"\n'
        '[[inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1, 2]\n'
        '[[outputs]]\nname = "y"\ndatatype = "FP32"\nshape = [-1, 2]\n'
        f"[postprocess]\nthreshold = {value}\n"
    )
    with pytest.raises(ManifestError, match="threshold"):
        load_version("m", version, ModelDefaults())

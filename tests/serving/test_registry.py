from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path

import numpy as np
import pytest

from serving.errors import ModelNotFound, ModelNotReady, VersionNotFound
from serving.manifest import VersionSpec
from serving.registry import ModelRegistry, VersionState, describe_model
from serving.runtimes import RuntimeFactory
from serving.runtimes.fake import FakeRuntime, fake_factory
from serving.settings import ServingSettings
from tests import fake_repo

TAB = fake_repo.TAB_MANIFEST.format(max_batch_size=32)

Behaviour = Callable[[VersionSpec, Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def loaded(root: Path, factories: Mapping[str, RuntimeFactory] | None = None) -> ModelRegistry:
    registry = ModelRegistry(
        ServingSettings(model_root=root, load_in_background=False),
        factories or {"fake": fake_factory},
    )
    registry.discover()
    registry.load_pending()
    return registry


def behaving(behaviour: Behaviour) -> dict[str, RuntimeFactory]:
    def factory(spec: VersionSpec, settings: ServingSettings) -> FakeRuntime:
        return FakeRuntime(spec, behaviour)

    return {"fake": factory}


def states(registry: ModelRegistry, model: str) -> dict[int, str]:
    return {n: str(v.state) for n, v in registry.model(model).versions.items()}


def test_fake_repo_loads_good_versions_and_fails_the_malformed_one(repo: Path) -> None:
    registry = loaded(repo)

    assert states(registry, "tab") == {1: "READY", 2: "READY", 3: "FAILED"}
    assert states(registry, "img") == {1: "READY"}
    broken = registry.model("tab").versions[3]
    assert "not valid TOML" in broken.reason
    assert broken.spec is None and broken.runtime is None


def test_malformed_manifest_fails_only_its_own_version(tmp_path: Path) -> None:
    fake_repo.write_version(tmp_path, "m", 1, TAB)
    fake_repo.write_version(tmp_path, "m", 2, TAB.replace('datatype = "FP32"', 'datatype = "F"', 1))
    # A type the parser does not check for must still fail only that version.
    fake_repo.write_version(
        tmp_path, "m", 3, 'runtime = "fake"\nartifact = "model.bin"\ninputs = 3'
    )
    fake_repo.write_version(tmp_path, "other", 1, TAB)

    registry = loaded(tmp_path)

    assert states(registry, "m") == {1: "READY", 2: "FAILED", 3: "FAILED"}
    assert "unknown datatype 'F'" in registry.model("m").versions[2].reason
    assert "TypeError" in registry.model("m").versions[3].reason
    assert states(registry, "other") == {1: "READY"}
    assert registry.ready


def test_runtime_whose_load_raises_leaves_the_version_failed_with_the_reason(
    tmp_path: Path,
) -> None:
    fake_repo.write_version(tmp_path, "m", 1, TAB)
    fake_repo.write_version(
        tmp_path, "m", 2, TAB.replace('dataset = "none"', 'fail_load = "weights are corrupt"')
    )

    registry = loaded(tmp_path)

    assert states(registry, "m") == {1: "READY", 2: "FAILED"}
    assert registry.model("m").versions[2].reason == "weights are corrupt"
    assert registry.resolve("m").version == 1


def test_unexpected_exception_fails_the_version_naming_its_type_not_its_text(
    tmp_path: Path,
) -> None:
    fake_repo.write_version(tmp_path, "m", 1, TAB)

    def exploding(spec: VersionSpec, settings: ServingSettings) -> FakeRuntime:
        raise OSError("cannot map file")

    registry = loaded(tmp_path, {"fake": exploding})

    version = registry.model("m").versions[1]
    assert version.state is VersionState.FAILED
    assert "OSError" in version.reason
    # The exception text can hold server paths; it goes to the log, not to API clients.
    assert "cannot map file" not in version.reason


def test_unknown_runtime_name_fails_the_version(tmp_path: Path) -> None:
    fake_repo.write_version(tmp_path, "m", 1, TAB.replace('runtime = "fake"', 'runtime = "onnx"'))

    registry = loaded(tmp_path)

    version = registry.model("m").versions[1]
    assert version.state is VersionState.FAILED
    assert "unknown runtime 'onnx'" in version.reason
    assert "fake" in version.reason  # says which runtimes exist


def test_unknown_preprocessing_step_fails_the_version(tmp_path: Path) -> None:
    fake_repo.write_version(tmp_path, "m", 1, TAB.replace('step = "features"', 'step = "tokenize"'))

    version = loaded(tmp_path).model("m").versions[1]

    assert version.state is VersionState.FAILED
    assert "unknown pre-processing step 'tokenize'" in version.reason


def test_warm_up_output_of_the_wrong_shape_fails_the_version(tmp_path: Path) -> None:
    fake_repo.write_version(tmp_path, "m", 1, TAB)

    def five_wide(spec: VersionSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"scores": np.zeros((len(inputs["x"]), 5), np.float32)}

    version = loaded(tmp_path, behaving(five_wide)).model("m").versions[1]

    assert version.state is VersionState.FAILED
    assert (
        version.reason == "warm-up output 'scores' has shape [1, 5], the manifest declares [-1, 3]"
    )


def test_warm_up_without_a_declared_output_fails_the_version(tmp_path: Path) -> None:
    fake_repo.write_version(tmp_path, "m", 1, TAB)

    def misnamed(spec: VersionSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"probabilities": np.zeros((1, 3), np.float32)}

    version = loaded(tmp_path, behaving(misnamed)).model("m").versions[1]

    assert version.state is VersionState.FAILED
    assert "warm-up output 'scores' has shape None" in version.reason


def test_warm_up_runs_one_zero_item_of_the_declared_shape(repo: Path) -> None:
    runtime = loaded(repo).resolve("img").runtime

    assert isinstance(runtime, FakeRuntime)
    assert runtime.loaded
    assert runtime.batch_sizes == [1]


def test_broken_model_toml_fails_every_version_of_that_model_only(repo: Path) -> None:
    (repo / "tab" / "model.toml").write_text("labels = [")

    registry = loaded(repo)

    assert states(registry, "tab") == {1: "FAILED", 2: "FAILED", 3: "FAILED"}
    assert registry.model("tab").versions[1].reason.startswith("model.toml: ")
    assert "not valid TOML" in registry.model("tab").reason
    assert states(registry, "img") == {1: "READY"}


def test_version_policy_limits_which_versions_are_registered(repo: Path) -> None:
    (repo / "tab" / "model.toml").write_text('version_policy = { policy = "latest", count = 2 }')

    assert states(loaded(repo), "tab") == {2: "READY", 3: "FAILED"}


def test_hidden_and_underscore_directories_are_not_models(repo: Path) -> None:
    fake_repo.write_version(repo, ".trash", 1, TAB)
    fake_repo.write_version(repo, "_staging", 1, TAB)

    assert sorted(m.name for m in loaded(repo).models) == ["img", "tab"]


def test_resolve_picks_the_newest_ready_version(repo: Path) -> None:
    # v3 is newer but FAILED, so v2 answers.
    assert loaded(repo).resolve("tab").version == 2


def test_resolve_returns_a_pinned_ready_version(repo: Path) -> None:
    version = loaded(repo).resolve("tab", 1)

    assert (version.version, version.state) == (1, VersionState.READY)
    assert version.spec is not None and version.spec.max_batch_size == 32


def test_resolve_pinned_failed_version_raises_model_not_ready_with_the_reason(repo: Path) -> None:
    with pytest.raises(ModelNotReady) as caught:
        loaded(repo).resolve("tab", 3)

    assert caught.value.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert "version 3 is FAILED" in caught.value.message
    assert "not valid TOML" in caught.value.message


def test_resolve_unknown_version_raises_version_not_found(repo: Path) -> None:
    with pytest.raises(VersionNotFound, match="model 'tab' has no version 9") as caught:
        loaded(repo).resolve("tab", 9)

    assert caught.value.status == HTTPStatus.NOT_FOUND
    assert caught.value.details == {"model": "tab", "version": 9}


def test_resolve_unknown_model_raises_model_not_found(repo: Path) -> None:
    with pytest.raises(ModelNotFound, match="model 'nope' does not exist") as caught:
        loaded(repo).resolve("nope")

    assert caught.value.status == HTTPStatus.NOT_FOUND


def test_resolve_model_without_a_ready_version_raises_model_not_ready(tmp_path: Path) -> None:
    fake_repo.write_version(tmp_path, "m", 1, "broken = [")

    with pytest.raises(ModelNotReady, match="model 'm' has no ready version"):
        loaded(tmp_path).resolve("m")


def test_ready_is_false_before_discovery_and_while_loading_then_true(repo: Path) -> None:
    registry = ModelRegistry(ServingSettings(model_root=repo), {"fake": fake_factory})
    assert not registry.ready

    registry.discover()
    assert not registry.ready
    assert registry.model("tab").versions[1].state is VersionState.LOADING

    registry.load_pending()
    assert registry.ready


def test_ready_is_false_when_every_version_failed(tmp_path: Path) -> None:
    fake_repo.write_version(tmp_path, "m", 1, "broken = [")

    assert not loaded(tmp_path).ready


def test_unload_all_unloads_every_runtime(repo: Path) -> None:
    registry = loaded(repo)
    runtimes = [v.runtime for m in registry.models for v in m.ready_versions()]

    registry.unload_all()

    assert len(runtimes) == 3
    assert all(isinstance(r, FakeRuntime) and not r.loaded for r in runtimes)


def test_describe_model_lists_versions_newest_first_with_state_and_reason(repo: Path) -> None:
    info = describe_model(loaded(repo).model("tab"))

    assert info["ready"] is True
    assert info["labels"] == ["a", "b", "c"]
    versions = info["versions"]
    assert isinstance(versions, list)
    assert [(v["version"], v["state"]) for v in versions] == [
        (3, "FAILED"),
        (2, "READY"),
        (1, "READY"),
    ]
    assert "not valid TOML" in versions[0]["reason"]
    assert versions[1]["reason"] is None
    assert versions[1]["max_batch_size"] == 2
    assert versions[1]["labels"] == ["a", "b", "c"]

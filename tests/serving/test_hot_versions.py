"""Versions that come and go without a restart."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from serving.manifest import VersionSpec
from serving.registry import VersionState
from serving.routing import TrafficPolicy, freeze
from serving.runtimes.fake import FakeRuntime, echo
from serving.service import InferenceService
from serving.settings import ServingSettings
from tests import fake_repo

ROW = [{"a": 1.0, "b": 2.0}]


def service_on(root: Path, factories: Mapping[str, object] | None = None) -> InferenceService:
    svc = InferenceService(
        ServingSettings(model_root=root, load_in_background=False),
        factories or {"fake": lambda spec, settings: FakeRuntime(spec)},  # type: ignore[dict-item]
    )
    svc.start()
    return svc


def test_a_new_version_directory_is_loaded_and_warmed_before_it_gets_traffic(
    repo: Path,
) -> None:
    svc = service_on(repo)
    assert svc.predict("tab", ROW).version == 2

    fake_repo.write_version(repo, "tab", 4, fake_repo.TAB_MANIFEST.format(max_batch_size=8))
    added = svc.rescan()

    assert added == [4]
    version = svc.registry.model("tab").versions[4]
    assert version.state is VersionState.READY
    assert isinstance(version.runtime, FakeRuntime) and version.runtime.batch_sizes == [1]
    assert svc.predict("tab", ROW).version == 4  # newest ready, no policy set
    assert svc.rescan() == []


def test_a_new_version_that_fails_to_load_gets_no_traffic(repo: Path) -> None:
    svc = service_on(repo)
    fake_repo.write_version(repo, "tab", 5, "runtime = 'fake'\nartifact = 'model.bin'\n")

    assert svc.rescan() == [5]
    assert svc.registry.model("tab").versions[5].state is VersionState.FAILED
    assert svc.predict("tab", ROW).version == 2


def test_a_new_model_directory_is_served_without_a_restart(repo: Path) -> None:
    svc = service_on(repo)
    fake_repo.write_version(repo, "other", 1, fake_repo.TAB_MANIFEST.format(max_batch_size=4))

    svc.rescan()

    assert svc.predict("other", ROW).version == 1


def test_a_removed_version_leaves_only_when_nothing_routes_to_it(repo: Path) -> None:
    svc = service_on(repo)
    svc.apply_policy("tab", TrafficPolicy(revision=1, labels=freeze({"stable": 1})))
    shutil.rmtree(repo / "tab" / "1")

    svc.rescan()
    assert 1 in svc.registry.model("tab").versions  # still the stable version
    assert svc.predict("tab", ROW).version == 1

    svc.apply_policy("tab", TrafficPolicy(revision=2, labels=freeze({"stable": 2})))
    runtime = svc.registry.model("tab").versions[1].runtime
    svc.rescan()

    assert 1 not in svc.registry.model("tab").versions
    assert isinstance(runtime, FakeRuntime) and not runtime.loaded


def test_a_removed_version_waits_for_its_requests_in_flight(repo: Path) -> None:
    armed, running, release = threading.Event(), threading.Event(), threading.Event()

    def slow(spec: VersionSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if armed.is_set() and spec.version == 2:
            running.set()
            release.wait(5)
        return echo(spec, inputs)

    svc = service_on(repo, {"fake": lambda spec, settings: FakeRuntime(spec, slow)})
    armed.set()  # warm-ups are done; the next call on v2 blocks until released
    worker = threading.Thread(target=svc.predict, args=("tab", ROW, 2))
    worker.start()
    assert running.wait(5)
    shutil.rmtree(repo / "tab" / "2")

    svc.rescan()
    assert 2 in svc.registry.model("tab").versions  # a request is still running on it

    release.set()
    worker.join(5)
    svc.rescan()
    assert 2 not in svc.registry.model("tab").versions


def test_the_deployment_version_policy_unloads_and_reloads_versions(repo: Path) -> None:
    svc = service_on(repo)
    latest_only = TrafficPolicy.from_dict(
        {"revision": 1, "version_policy": {"policy": "latest", "count": 1}}
    )

    svc.apply_policy("tab", latest_only)
    svc.rescan()
    assert sorted(svc.registry.model("tab").versions) == [3]  # v3 exists (FAILED) and is newest

    only_one = TrafficPolicy.from_dict(
        {"revision": 2, "version_policy": {"policy": "specific", "versions": [1]}}
    )
    svc.apply_policy("tab", only_one)
    assert svc.rescan() == [1]
    assert svc.predict("tab", ROW).version == 1
    assert sorted(svc.registry.model("tab").versions) == [1]


def test_a_version_the_policy_drops_stays_while_a_label_points_at_it(repo: Path) -> None:
    svc = service_on(repo)
    svc.apply_policy(
        "tab",
        TrafficPolicy.from_dict(
            {
                "revision": 1,
                "labels": {"stable": 1},
                "version_policy": {"policy": "specific", "versions": [2]},
            }
        ),
    )
    svc.rescan()
    assert sorted(svc.registry.model("tab").versions) == [1, 2]

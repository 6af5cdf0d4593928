"""Ensembles: declared as data, members in parallel, answers averaged, voted or side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.ensemble import combine, load_ensembles
from serving.pipeline import rank
from serving.routing import TrafficPolicy
from serving.runtimes.fake import fake_factory
from serving.service import InferenceService
from serving.settings import ServingSettings

LABELS = ("a", "b", "c")


def prediction(*scores: float):  # type: ignore[no-untyped-def]
    return rank(np.asarray(scores), LABELS, 3)


def test_average_combines_probabilities_per_class() -> None:
    answers = [[prediction(0.6, 0.4, 0.0)], [prediction(0.0, 0.6, 0.4)]]
    combined = combine("average", answers, LABELS, 2)[0]
    assert (combined.label, combined.score) == ("b", 0.5)
    assert [label for label, _ in combined.top_k] == ["b", "a"]


def test_vote_takes_the_majority_and_breaks_ties_by_mean_score() -> None:
    answers = [[prediction(0.9, 0.1, 0)], [prediction(0.2, 0.7, 0.1)], [prediction(0.6, 0.4, 0)]]
    assert combine("vote", answers, LABELS, 3)[0].label == "a"
    tie = [[prediction(0.9, 0.1, 0)], [prediction(0.05, 0.95, 0)]]
    assert combine("vote", tie, LABELS, 3)[0].label == "b"


def test_malformed_ensemble_files_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text('combine = "vote"\n[[members]]\nmodel = "tab"\n')
    (tmp_path / "bad.toml").write_text('combine = "median"\n[[members]]\nmodel = "tab"\n')
    (tmp_path / "empty.toml").write_text('combine = "all"\n')
    assert list(load_ensembles(tmp_path)) == ["good"]


def test_an_all_versions_ensemble_answers_with_every_ready_version(
    repo: Path, tmp_path: Path
) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "tab-all.toml").write_text(
        'combine = "all"\n[[members]]\nmodel = "tab"\nversions = "ready"\n'
    )
    service = InferenceService(
        ServingSettings(model_root=repo, pipeline_root=pipelines, load_in_background=False),
        {"fake": fake_factory},
    )
    service.start()

    result = service.predict_ensemble("tab-all", [{"a": 1, "b": 5}])

    assert [(m.model, m.version) for m in result.members] == [("tab", 1), ("tab", 2)]
    assert result.predictions[0].label == "b"
    with pytest.raises(Exception, match="does not exist"):
        service.predict_ensemble("nope", [{"a": 1}])


def test_an_unpinned_member_follows_its_models_traffic_policy(repo: Path, tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "tab-pair.toml").write_text(
        'combine = "average"\n[[members]]\nmodel = "tab"\n[[members]]\nmodel = "tab"\nversion = 2\n'
    )
    service = InferenceService(
        ServingSettings(model_root=repo, pipeline_root=pipelines, load_in_background=False),
        {"fake": fake_factory},
    )
    service.start()
    service.apply_policy("tab", TrafficPolicy(labels={"stable": 1}, revision=1))

    assert [t.version for t in service.ensemble_signature("tab-pair")] == [1, 2]
    result = service.infer_ensemble("tab-pair", {"x": np.array([[1.0, 5.0, 0.0]], np.float32)})
    assert result.outputs["label"].tolist() == [b"b"]

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from serving.errors import (
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    VersionNotFound,
)
from serving.manifest import VersionSpec
from serving.runtimes.fake import FakeRuntime
from serving.service import InferenceService
from tests import fake_repo

MakeService = Callable[..., InferenceService]

# With the echo runtime the winning label is the feature with the largest value.
ITEMS = [
    {"a": 1, "b": 0},
    {"a": 0, "b": 1},
    {"a": 0, "b": 0, "c": 1},
    {"a": 0, "b": 2, "c": 1},
    {"a": 3, "b": 2},
]
WINNERS = ["a", "b", "c", "b", "a"]


def fake_runtime(service: InferenceService, model: str, version: int) -> FakeRuntime:
    runtime = service.registry.resolve(model, version).runtime
    assert isinstance(runtime, FakeRuntime)
    runtime.batch_sizes.clear()  # forget the warm-up call
    return runtime


def test_predict_batches_items_by_max_batch_size(service: InferenceService) -> None:
    runtime = fake_runtime(service, "tab", 2)

    result = service.predict("tab", ITEMS)

    assert (result.model, result.version) == ("tab", 2)
    assert runtime.batch_sizes == [2, 2, 1]
    assert [p.label for p in result.predictions] == WINNERS  # order survives the batching


def test_predict_sends_items_as_one_batch_when_they_fit(service: InferenceService) -> None:
    runtime = fake_runtime(service, "tab", 1)

    result = service.predict("tab", ITEMS, version=1)

    assert result.version == 1
    assert runtime.batch_sizes == [5]
    assert [p.label for p in result.predictions] == WINNERS


def test_predict_reports_top_k_with_model_labels(service: InferenceService) -> None:
    [prediction] = service.predict("tab", [{"a": 0.5, "b": 2, "c": 1}]).predictions

    assert prediction.to_dict() == {
        "label": "b",
        "score": 2.0,
        "top_k": [{"label": "b", "score": 2.0}, {"label": "c", "score": 1.0}],
    }


def test_predict_without_items_is_invalid_input(service: InferenceService) -> None:
    with pytest.raises(InvalidInput, match="no items to predict"):
        service.predict("tab", [])


def test_predict_with_too_many_items_is_invalid_input(make_service: MakeService) -> None:
    service = make_service(max_items_per_request=2)

    with pytest.raises(InvalidInput, match="3 items in one request; at most 2 are accepted"):
        service.predict("tab", ITEMS[:3])
    assert len(service.predict("tab", ITEMS[:2]).predictions) == 2


def test_predict_checks_every_item_before_running_any(service: InferenceService) -> None:
    runtime = fake_runtime(service, "tab", 2)

    with pytest.raises(InvalidInput) as caught:
        service.predict("tab", [*ITEMS, {"a": "x", "b": 1}])

    assert caught.value.details["item"] == 5
    assert runtime.batch_sizes == []


def test_predict_on_a_model_without_postprocessing_points_to_v2(
    tmp_path: Path, make_service: MakeService
) -> None:
    manifest = fake_repo.TAB_MANIFEST.format(max_batch_size=4)
    manifest = manifest.replace("[postprocess]\nsoftmax = false\ntop_k = 2\n", "")
    fake_repo.write_version(tmp_path, "raw", 1, manifest)
    service = make_service(root=tmp_path)

    with pytest.raises(InvalidInput, match="declares no post-processing; use the tensor"):
        service.predict("raw", ITEMS)


@pytest.mark.parametrize(
    ("model", "version", "error"),
    [("nope", None, ModelNotFound), ("tab", 9, VersionNotFound), ("tab", 3, ModelNotReady)],
)
def test_predict_on_a_model_that_cannot_answer_raises(
    service: InferenceService, model: str, version: int | None, error: type[Exception]
) -> None:
    with pytest.raises(error):
        service.predict(model, ITEMS, version)


def rows(n: int) -> np.ndarray:
    return np.arange(n * 3, dtype=np.float32).reshape(n, 3)


def test_infer_runs_tensors_in_batches_and_keeps_their_order(service: InferenceService) -> None:
    runtime = fake_runtime(service, "tab", 2)

    result = service.infer("tab", {"x": rows(5)})

    assert result.version == 2
    assert runtime.batch_sizes == [2, 2, 1]
    np.testing.assert_array_equal(result.outputs["scores"], rows(5))


@pytest.mark.parametrize(
    ("inputs", "missing", "unknown"),
    [({}, ["x"], []), ({"x": rows(1), "z": rows(1)}, [], ["z"]), ({"y": rows(1)}, ["x"], ["y"])],
)
def test_infer_refuses_inputs_that_do_not_match_the_signature(
    service: InferenceService,
    inputs: Mapping[str, np.ndarray],
    missing: list[str],
    unknown: list[str],
) -> None:
    with pytest.raises(InvalidInput, match=r"expected \['x'\]") as caught:
        service.infer("tab", inputs)

    assert caught.value.details == {"expected": ["x"], "missing": missing, "unknown": unknown}


def test_infer_refuses_the_wrong_datatype(service: InferenceService) -> None:
    with pytest.raises(InvalidInput, match="input 'x' must be FP32") as caught:
        service.infer("tab", {"x": rows(1).astype(np.float64)})

    assert caught.value.details == {"input": "x", "expected": "FP32", "got": "float64"}


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 4), "got [2, 4]"), ((3,), "got [3]"), ((1, 1, 3), "got [1, 1, 3]")],
)
def test_infer_refuses_the_wrong_shape_naming_the_input(
    service: InferenceService, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        service.infer("tab", {"x": np.zeros(shape, np.float32)})

    assert caught.value.message == f"input 'x' expects shape [-1, 3], {message}"


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_infer_refuses_nan_and_infinity(service: InferenceService, value: float) -> None:
    batch = rows(2)
    batch[1, 1] = value

    with pytest.raises(InvalidInput, match="input 'x' contains NaN or infinite values"):
        service.infer("tab", {"x": batch})


def test_infer_refuses_an_empty_batch(service: InferenceService) -> None:
    with pytest.raises(InvalidInput, match="non-zero number of items"):
        service.infer("tab", {"x": rows(0)})


def boom(spec: VersionSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    raise RuntimeError("CUDA error at /srv/secret/kernels.cu:42")


def test_runtime_error_during_predict_is_inference_failed_without_its_text(
    service: InferenceService,
) -> None:
    fake_runtime(service, "tab", 2).behaviour = boom

    with pytest.raises(InferenceFailed) as caught:
        service.predict("tab", ITEMS)

    err = caught.value
    assert err.status == 500 and err.code == "inference_failed"
    assert err.message == "model 'tab' version 2 failed to run the batch"
    assert "/srv/secret" not in err.message and not err.details
    assert isinstance(err.__cause__, RuntimeError)  # chained for the log, not the client


def test_runtime_error_during_infer_is_inference_failed(service: InferenceService) -> None:
    fake_runtime(service, "tab", 1).behaviour = boom

    with pytest.raises(InferenceFailed):
        service.infer("tab", {"x": rows(1)}, version=1)


def test_background_loading_becomes_ready_within_a_bounded_wait(
    make_service: MakeService,
) -> None:
    service = make_service(load_in_background=True)

    assert service.live
    assert service.wait_loaded(timeout_seconds=10)
    assert service.ready
    assert service.version("tab").version == 2


def test_stop_unloads_every_runtime(service: InferenceService) -> None:
    runtime = fake_runtime(service, "img", 1)

    service.stop()

    assert not runtime.loaded

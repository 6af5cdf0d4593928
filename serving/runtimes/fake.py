"""A runtime for tests: no artifact format, deterministic answers, injectable failures."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import numpy as np

from serving.errors import RuntimeLoadError
from serving.manifest import VersionSpec
from serving.settings import ServingSettings


def echo(spec: VersionSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Default behaviour: each output row is the first input row, flattened, cut or zero-padded
    to the output's width, so a test chooses the winning label through its input."""
    first = next(iter(inputs.values()))
    rows = first.reshape(first.shape[0], -1).astype(np.float64)
    out = spec.outputs[0]
    width = int(np.prod(out.item_shape))
    scores = np.zeros((rows.shape[0], width))
    take = min(width, rows.shape[1])
    scores[:, :take] = rows[:, :take]
    return {out.name: scores.astype(out.dtype).reshape((rows.shape[0], *out.item_shape))}


class FakeRuntime:
    """Computes ``behaviour(spec, inputs)``; counts calls and batch sizes for assertions."""

    def __init__(
        self,
        spec: VersionSpec,
        behaviour: Callable[[VersionSpec, Mapping[str, np.ndarray]], dict[str, np.ndarray]] = echo,
        *,
        fail_load: str | None = None,
    ) -> None:
        self.spec = spec
        self.behaviour = behaviour
        self.fail_load = fail_load
        self.loaded = False
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def load(self) -> None:
        if self.fail_load:
            raise RuntimeLoadError(self.fail_load)
        self.loaded = True

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.batch_sizes.append(next(iter(inputs.values())).shape[0])
        return self.behaviour(self.spec, inputs)

    def unload(self) -> None:
        self.loaded = False


def fake_factory(spec: VersionSpec, settings: ServingSettings) -> FakeRuntime:
    """Factory for the ``fake`` runtime name; a manifest may set ``fail_load`` in provenance."""
    return FakeRuntime(spec, fail_load=spec.provenance.get("fail_load"))

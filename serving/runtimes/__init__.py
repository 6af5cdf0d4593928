"""Runtimes execute one version's artifact. One class per model format.

A runtime knows nothing about images, labels or HTTP: it takes a batch of named arrays that
already match the manifest's input signature and returns the named outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from serving.manifest import TensorSpec, VersionSpec
from serving.settings import ServingSettings


class Runtime(Protocol):
    def load(self) -> None:
        """Load the artifact and check it against the manifest; raises ``RuntimeLoadError``."""

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; keys are the manifest's input names, the result uses output names."""

    def unload(self) -> None:
        """Release the artifact; the runtime may not be used afterwards."""


RuntimeFactory = Callable[[VersionSpec, ServingSettings], Runtime]


def match_names(
    declared: tuple[TensorSpec, ...], available: list[str], what: str
) -> dict[str, str]:
    """Map manifest tensor names to an artifact's names: by name when they agree, else by order.

    Raises ValueError when neither works, so the loader can mark the version FAILED.
    """
    names = [t.name for t in declared]
    if set(names) <= set(available):
        return {n: n for n in names}
    if len(names) == len(available):
        return dict(zip(names, available, strict=True))
    raise ValueError(f"the manifest declares {what} {names} but the artifact has {available}")


def default_factories() -> dict[str, RuntimeFactory]:
    """The runtimes a production server offers; imported lazily so TensorFlow loads only if used."""

    def tflite(spec: VersionSpec, settings: ServingSettings) -> Runtime:
        from serving.runtimes.tflite import TFLiteRuntime

        return TFLiteRuntime(spec, num_threads=settings.tflite_threads)

    def savedmodel(spec: VersionSpec, settings: ServingSettings) -> Runtime:
        from serving.runtimes.savedmodel import SavedModelRuntime

        return SavedModelRuntime(spec, intra_op_threads=settings.tf_intra_op_threads)

    return {"tflite": tflite, "savedmodel": savedmodel}

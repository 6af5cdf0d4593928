"""TensorFlow SavedModel runtime. TensorFlow is imported only when such a version loads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.errors import RuntimeLoadError
from serving.manifest import VersionSpec
from serving.runtimes import match_names


def _configure_threads(intra_op_threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        # TensorFlow refuses once its runtime is initialised (a second SavedModel in the same
        # process); the first setting stands, which is what we want.
        pass


class SavedModelRuntime:
    """Calls the ``serving_default`` signature. Concrete functions are thread-safe."""

    def __init__(self, spec: VersionSpec, *, intra_op_threads: int = 1) -> None:
        self._spec = spec
        self._intra_op_threads = intra_op_threads
        self._loaded: Any = None
        self._fn: Any = None
        self._in_names: dict[str, str] = {}
        self._out_names: dict[str, str] = {}

    def load(self) -> None:
        _configure_threads(self._intra_op_threads)
        import tensorflow as tf

        try:
            self._loaded = tf.saved_model.load(str(self._spec.artifact))
            self._fn = self._loaded.signatures["serving_default"]
        except (OSError, KeyError, ValueError, tf.errors.OpError) as err:
            raise RuntimeLoadError(f"cannot load SavedModel: {err}") from err
        input_sig = self._fn.structured_input_signature[1]
        try:
            self._in_names = match_names(self._spec.inputs, list(input_sig), "inputs")
            self._out_names = match_names(
                self._spec.outputs, list(self._fn.structured_outputs), "outputs"
            )
        except ValueError as err:
            raise RuntimeLoadError(str(err)) from err
        for tensor in self._spec.inputs:
            actual = input_sig[self._in_names[tensor.name]]
            if actual.dtype.as_numpy_dtype != tensor.dtype:
                raise RuntimeLoadError(
                    f"input '{tensor.name}' is {actual.dtype.name} in the artifact "
                    f"but {tensor.datatype} in the manifest"
                )
            if list(actual.shape)[1:] != list(tensor.item_shape):
                raise RuntimeLoadError(
                    f"input '{tensor.name}' has item shape {list(actual.shape)[1:]} in the "
                    f"artifact but {list(tensor.item_shape)} in the manifest"
                )

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        feed = {self._in_names[k]: tf.constant(v) for k, v in inputs.items()}
        result = self._fn(**feed)
        return {name: result[actual].numpy() for name, actual in self._out_names.items()}

    def unload(self) -> None:
        self._fn = None
        self._loaded = None

"""TFLite runtime on the ai-edge-litert interpreter."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.errors import RuntimeLoadError
from serving.manifest import VersionSpec
from serving.runtimes import match_names


class TFLiteRuntime:
    """Runs a ``.tflite`` flatbuffer.

    An interpreter is not re-entrant: two threads calling ``invoke`` on one instance corrupt
    each other's tensors. Each thread therefore gets its own interpreter built from the same
    model bytes (cheap: the flatbuffer is shared, only the tensor arena is per thread). Do not
    "optimise" this into one shared interpreter without a lock or a single owner thread.
    """

    def __init__(self, spec: VersionSpec, *, num_threads: int = 1) -> None:
        self._spec = spec
        self._num_threads = num_threads
        self._model: bytes | None = None
        self._local = threading.local()
        self._input_index: dict[str, int] = {}
        self._output_index: dict[str, int] = {}

    def _new_interpreter(self) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=self._model, num_threads=self._num_threads)
        interpreter.allocate_tensors()
        return interpreter

    def load(self) -> None:
        try:
            self._model = self._spec.artifact.read_bytes()
            interpreter = self._new_interpreter()
        except (OSError, ValueError, RuntimeError) as err:
            raise RuntimeLoadError(f"cannot load TFLite model: {err}") from err
        signatures = interpreter.get_signature_list()
        try:
            if signatures:
                key = (
                    "serving_default" if "serving_default" in signatures else next(iter(signatures))
                )
                runner = interpreter.get_signature_runner(key)
                in_details = runner.get_input_details()
                out_details = runner.get_output_details()
                in_names = match_names(self._spec.inputs, list(in_details), "inputs")
                out_names = match_names(self._spec.outputs, list(out_details), "outputs")
                self._input_index = {m: in_details[a]["index"] for m, a in in_names.items()}
                self._output_index = {m: out_details[a]["index"] for m, a in out_names.items()}
            else:
                ins = {d["name"]: d["index"] for d in interpreter.get_input_details()}
                outs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
                in_names = match_names(self._spec.inputs, list(ins), "inputs")
                out_names = match_names(self._spec.outputs, list(outs), "outputs")
                self._input_index = {m: ins[a] for m, a in in_names.items()}
                self._output_index = {m: outs[a] for m, a in out_names.items()}
        except ValueError as err:
            raise RuntimeLoadError(str(err)) from err
        details = {d["index"]: d for d in interpreter.get_input_details()}
        for tensor in self._spec.inputs:
            actual = details[self._input_index[tensor.name]]
            if np.dtype(actual["dtype"]) != tensor.dtype:
                raise RuntimeLoadError(
                    f"input '{tensor.name}' is {np.dtype(actual['dtype'])} in the artifact "
                    f"but {tensor.datatype} in the manifest"
                )
            if list(actual["shape"][1:]) != list(tensor.item_shape):
                raise RuntimeLoadError(
                    f"input '{tensor.name}' has item shape {list(actual['shape'][1:])} in the "
                    f"artifact but {list(tensor.item_shape)} in the manifest"
                )
        self._local.interpreter = interpreter

    def _interpreter(self) -> tuple[Any, dict[int, tuple[int, ...]]]:
        """This thread's interpreter and the input shapes it is currently allocated for."""
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            interpreter = self._new_interpreter()
            self._local.interpreter = interpreter
        shapes = getattr(self._local, "shapes", None)
        if shapes is None:
            shapes = {d["index"]: tuple(d["shape"]) for d in interpreter.get_input_details()}
            self._local.shapes = shapes
        return interpreter, shapes

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        interpreter, shapes = self._interpreter()
        resized = False
        for name, index in self._input_index.items():
            shape = inputs[name].shape
            if shapes.get(index) != shape:
                # Resizing re-plans the tensor arena: only when the batch size changes.
                interpreter.resize_tensor_input(index, shape, strict=False)
                shapes[index] = shape
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for name, index in self._input_index.items():
            interpreter.set_tensor(index, inputs[name])
        interpreter.invoke()
        return {name: interpreter.get_tensor(index) for name, index in self._output_index.items()}

    def unload(self) -> None:
        self._model = None
        self._local = threading.local()

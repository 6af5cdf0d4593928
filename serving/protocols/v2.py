"""Open Inference Protocol v2 (KServe, Triton, MLServer): JSON tensors to numpy and back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.errors import InvalidInput
from serving.manifest import DATATYPES, datatype_of
from serving.service import InferResult

# Which JSON number kinds may become which datatype: a float must never be silently
# truncated into an integer tensor.
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
_KIND_WORDS = {
    "b": "booleans",
    "i": "integers",
    "u": "integers",
    "f": "floating-point numbers",
    "U": "strings",
    "S": "strings",
}


@dataclass(frozen=True)
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    # Outputs the client asked to receive as binary data (per output, or all of them).
    binary_outputs: frozenset[str] = frozenset()
    all_binary: bool = False


class _Binary:
    """The bytes after the JSON header, consumed input by input in order."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def take(self, size: int, where: str) -> bytes:
        if size < 0 or self._offset + size > len(self._data):
            raise InvalidInput(f"{where}: binary_data_size runs past the end of the body")
        chunk = self._data[self._offset : self._offset + size].tobytes()
        self._offset += size
        return chunk

    def finish(self) -> None:
        if self._offset != len(self._data):
            raise InvalidInput(
                f"{len(self._data) - self._offset} bytes after the tensors belong to no input"
            )


def _decode_binary(chunk: bytes, datatype: str, where: str) -> np.ndarray:
    if datatype != "BYTES":
        dtype = DATATYPES[datatype].newbyteorder("<")
        if len(chunk) % dtype.itemsize:
            raise InvalidInput(f"{where}: {len(chunk)} bytes are not whole {datatype} values")
        return np.frombuffer(chunk, dtype=dtype).astype(DATATYPES[datatype])
    items, offset = [], 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise InvalidInput(f"{where}: a BYTES element's length prefix is cut off")
        size = int.from_bytes(chunk[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(chunk):
            raise InvalidInput(f"{where}: a BYTES element runs past its tensor")
        items.append(chunk[offset : offset + size])
        offset += size
    return np.asarray(items, dtype=object)


def _encode_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    parts = []
    for value in array.reshape(-1):
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(len(data).to_bytes(4, "little") + data)
    return b"".join(parts)


def _tensor(raw: Any, index: int, binary: _Binary | None = None) -> tuple[str, np.ndarray]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{index}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}]: 'name' must be a non-empty string")
    where = f"input '{name}'"
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(
            f"{where}: unknown datatype {datatype!r}",
            details={"input": name, "known": list(DATATYPES)},
        )
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"{where}: 'shape' must be a list of non-negative integers")
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    dtype = DATATYPES[datatype]
    expected = int(np.prod(shape)) if shape else 1
    if "binary_data_size" in parameters and "data" not in raw:
        size = parameters["binary_data_size"]
        if binary is None or not isinstance(size, int) or isinstance(size, bool):
            raise InvalidInput(
                f"{where}: binary data needs an integer binary_data_size and an "
                "Inference-Header-Content-Length header"
            )
        array = _decode_binary(binary.take(size, where), datatype, where)
        if array.size != expected:
            raise InvalidInput(
                f"{where}: shape {shape} needs {expected} values, the binary data has {array.size}",
                details={"input": name, "shape": shape, "values": int(array.size)},
            )
        return name, array.reshape(shape)
    if "data" not in raw:
        raise InvalidInput(f"{where}: 'data' (or parameters.binary_data_size) is required")
    try:
        if datatype == "BYTES":
            array = np.asarray(raw["data"], dtype=object)
            flat = [v.encode() if isinstance(v, str) else v for v in array.reshape(-1)]
            if not all(isinstance(v, bytes) for v in flat):
                raise InvalidInput(f"{where}: BYTES data must be strings")
            array = np.asarray(flat, dtype=object)
        else:
            array = np.asarray(raw["data"])
            if array.size and array.dtype.kind not in _ACCEPTED_KINDS.get(dtype.kind, ""):
                found = _KIND_WORDS.get(array.dtype.kind, "values of mixed types")
                raise InvalidInput(
                    f"{where}: {found} cannot be {datatype}",
                    details={"input": name, "datatype": datatype},
                )
            if dtype.kind in "iu" and array.size:
                info = np.iinfo(dtype)
                if array.min() < info.min or array.max() > info.max:
                    raise InvalidInput(f"{where}: values out of range for {datatype}")
            # A value past the float range becomes inf here; the service then refuses it
            # with a 422, so numpy's overflow warning is expected, not an error.
            with np.errstate(over="ignore"):
                array = array.astype(dtype).reshape(-1)
    except ValueError as err:
        raise InvalidInput(f"{where}: 'data' is not a regular array of {datatype}") from err
    if array.size != expected:
        raise InvalidInput(
            f"{where}: shape {shape} needs {expected} values, data has {array.size}",
            details={"input": name, "shape": shape, "values": int(array.size)},
        )
    return name, array.reshape(shape)


def decode_request(body: Any, binary_data: bytes = b"") -> InferRequest:
    """Parse a v2 inference request: its JSON (already decoded) and, with the binary tensor
    data extension, the bytes that followed the JSON header."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list")
    inputs: dict[str, np.ndarray] = {}
    binary = _Binary(binary_data)
    for i, raw in enumerate(raw_inputs):
        name, array = _tensor(raw, i, binary)
        if name in inputs:
            raise InvalidInput(f"input '{name}' is given twice")
        inputs[name] = array
    binary.finish()
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    wanted: list[str] = []
    binary_outputs: set[str] = set()
    raw_outputs = body.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise InvalidInput("'outputs' must be a list")
    for i, out in enumerate(raw_outputs):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise InvalidInput(f"outputs[{i}] must be an object with a 'name'")
        wanted.append(out["name"])
        output_parameters = out.get("parameters") or {}
        if isinstance(output_parameters, dict) and output_parameters.get("binary_data") is True:
            binary_outputs.add(out["name"])
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    return InferRequest(
        inputs=inputs,
        id=request_id,
        outputs=tuple(wanted),
        parameters=parameters,
        binary_outputs=frozenset(binary_outputs),
        all_binary=parameters.get("binary_data_output") is True,
    )


def encode_response(result: InferResult, request: InferRequest) -> tuple[dict[str, Any], bytes]:
    """The v2 response: its JSON and the binary tensor bytes that follow it (empty unless the
    client asked for binary outputs). Honours the ``outputs`` filter and echoes ``id``."""
    names = list(request.outputs) or list(result.outputs)
    unknown = [n for n in names if n not in result.outputs]
    if unknown:
        raise InvalidInput(
            f"unknown output(s) {unknown}", details={"available": sorted(result.outputs)}
        )
    outputs = []
    binary: list[bytes] = []
    for name in names:
        array = result.outputs[name]
        datatype = datatype_of(array.dtype)
        output: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if request.all_binary or name in request.binary_outputs:
            chunk = _encode_binary(array, datatype)
            binary.append(chunk)
            output["parameters"] = {"binary_data_size": len(chunk)}
        else:
            data = array.reshape(-1).tolist()
            if datatype == "BYTES":
                data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data]
            output["data"] = data
        outputs.append(output)
    body: dict[str, Any] = {"model_name": result.model, "outputs": outputs}
    if result.version is not None:
        body["model_version"] = str(result.version)
    if request.id is not None:
        body["id"] = request.id
    return body, b"".join(binary)

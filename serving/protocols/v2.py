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


def _tensor(raw: Any, index: int) -> tuple[str, np.ndarray]:
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
    if "data" not in raw:
        raise InvalidInput(f"{where}: 'data' is required (the binary extension comes later)")
    dtype = DATATYPES[datatype]
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
    expected = int(np.prod(shape)) if shape else 1
    if array.size != expected:
        raise InvalidInput(
            f"{where}: shape {shape} needs {expected} values, data has {array.size}",
            details={"input": name, "shape": shape, "values": int(array.size)},
        )
    return name, array.reshape(shape)


def decode_request(body: Any) -> InferRequest:
    """Parse a v2 inference request body (already JSON-decoded)."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list")
    inputs: dict[str, np.ndarray] = {}
    for i, raw in enumerate(raw_inputs):
        name, array = _tensor(raw, i)
        if name in inputs:
            raise InvalidInput(f"input '{name}' is given twice")
        inputs[name] = array
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    wanted: list[str] = []
    raw_outputs = body.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise InvalidInput("'outputs' must be a list")
    for i, out in enumerate(raw_outputs):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise InvalidInput(f"outputs[{i}] must be an object with a 'name'")
        wanted.append(out["name"])
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    return InferRequest(inputs=inputs, id=request_id, outputs=tuple(wanted), parameters=parameters)


def encode_response(result: InferResult, request: InferRequest) -> dict[str, Any]:
    """The v2 response body; honours the request's ``outputs`` filter and echoes its ``id``."""
    names = list(request.outputs) or list(result.outputs)
    unknown = [n for n in names if n not in result.outputs]
    if unknown:
        raise InvalidInput(
            f"unknown output(s) {unknown}", details={"available": sorted(result.outputs)}
        )
    outputs = []
    for name in names:
        array = result.outputs[name]
        datatype = datatype_of(array.dtype)
        data = array.reshape(-1).tolist()
        if datatype == "BYTES":
            data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in data]
        outputs.append(
            {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}
        )
    body: dict[str, Any] = {
        "model_name": result.model,
        "model_version": str(result.version),
        "outputs": outputs,
    }
    if request.id is not None:
        body["id"] = request.id
    return body

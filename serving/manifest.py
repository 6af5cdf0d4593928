"""Parse a model repository into frozen specs.

Layout (one immutable version per directory, as TF Serving lays out its model base path)::

    <root>/<model>/model.toml               defaults shared by the versions (optional)
    <root>/<model>/<version>/manifest.toml  runtime, artifact, signature, steps, provenance
    <root>/<model>/<version>/<artifact>

Parsing checks structure only; whether the artifact matches the declared signature is the
runtime's business at load time.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from serving.errors import ManifestError

MODEL_FILE = "model.toml"
MANIFEST_FILE = "manifest.toml"

# Open Inference Protocol v2 datatypes and their numpy equivalents.
DATATYPES: Mapping[str, np.dtype[Any]] = MappingProxyType(
    {
        "BOOL": np.dtype(np.bool_),
        "UINT8": np.dtype(np.uint8),
        "UINT16": np.dtype(np.uint16),
        "UINT32": np.dtype(np.uint32),
        "UINT64": np.dtype(np.uint64),
        "INT8": np.dtype(np.int8),
        "INT16": np.dtype(np.int16),
        "INT32": np.dtype(np.int32),
        "INT64": np.dtype(np.int64),
        "FP16": np.dtype(np.float16),
        "FP32": np.dtype(np.float32),
        "FP64": np.dtype(np.float64),
        "BYTES": np.dtype(np.object_),
    }
)


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The v2 datatype name of a numpy dtype; raises KeyError for dtypes v2 cannot carry."""
    for name, candidate in DATATYPES.items():
        if candidate == dtype:
            return name
    if dtype.kind in ("S", "U"):
        return "BYTES"
    raise KeyError(str(dtype))


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of a signature; ``-1`` in ``shape`` means any size (the batch axis)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[Any]:
        return DATATYPES[self.datatype]

    @property
    def item_shape(self) -> tuple[int, ...]:
        """The shape of one item: the declared shape without its leading batch axis."""
        return self.shape[1:]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class StepSpec:
    """One declared pipeline step: its type name and its parameters as written."""

    step: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, **plain(self.params)}


@dataclass(frozen=True)
class PostprocessSpec:
    """How raw outputs become labelled predictions."""

    output: str
    softmax: bool
    top_k: int
    labels: tuple[str, ...]
    # Below this top score the answer's label is ``below_threshold_label``, not a guess.
    threshold: float | None = None
    below_threshold_label: str = "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "softmax": self.softmax,
            "top_k": self.top_k,
            "threshold": self.threshold,
            "below_threshold_label": self.below_threshold_label,
        }


@dataclass(frozen=True)
class BatchingSpec:
    """Server-side dynamic batching of one version (the manifest's ``[batching]`` table)."""

    max_batch_delay_ms: float
    max_queue_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_batch_delay_ms": self.max_batch_delay_ms,
            "max_queue_size": self.max_queue_size,
        }


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served: ``all``, the ``latest`` N, or ``specific`` ones."""

    policy: str = "all"
    count: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.policy == "latest":
            return ordered[-self.count :]
        if self.policy == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered

    def to_dict(self) -> dict[str, Any]:
        if self.policy == "latest":
            return {"policy": "latest", "count": self.count}
        if self.policy == "specific":
            return {"policy": "specific", "versions": list(self.versions)}
        return {"policy": "all"}


@dataclass(frozen=True)
class ModelDefaults:
    """The optional model-level file: what every version shares unless it says otherwise."""

    description: str = ""
    labels: tuple[str, ...] = ()
    version_policy: VersionPolicy = VersionPolicy()


@dataclass(frozen=True)
class VersionSpec:
    """Everything a manifest declares about one version."""

    model: str
    version: int
    path: Path
    runtime: str
    artifact: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess: tuple[StepSpec, ...]
    postprocess: PostprocessSpec | None
    max_batch_size: int
    provenance: Mapping[str, Any]
    batching: BatchingSpec | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.postprocess.labels if self.postprocess else ()


def plain(value: Any) -> Any:
    """Frozen manifest values back to JSON-ready dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as err:
        raise ManifestError(f"{path.name} is missing") from err
    except tomllib.TOMLDecodeError as err:
        raise ManifestError(f"{path.name} is not valid TOML: {err}") from err


def _require(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise ManifestError(f"{where}: '{key}' is required")
    value = table[key]
    # bool is an int subclass; a manifest saying max_batch_size = true is a mistake.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ManifestError(f"{where}: '{key}' has the wrong type ({type(value).__name__})")
    return value


def _tensor(table: Any, where: str) -> TensorSpec:
    if not isinstance(table, dict):
        raise ManifestError(f"{where} must be a table")
    name = _require(table, "name", str, where)
    datatype = _require(table, "datatype", str, where)
    if datatype not in DATATYPES:
        raise ManifestError(f"{where}: unknown datatype '{datatype}'")
    shape = _require(table, "shape", list, where)
    if not shape or not all(isinstance(d, int) and (d > 0 or d == -1) for d in shape):
        raise ManifestError(f"{where}: shape must be a non-empty list of positive ints or -1")
    return TensorSpec(name=name, datatype=datatype, shape=tuple(shape))


def parse_version_policy(table: Any) -> VersionPolicy:
    if table is None:
        return VersionPolicy()
    if not isinstance(table, dict):
        raise ManifestError("version_policy must be a table")
    policy = table.get("policy", "all")
    if policy == "all":
        return VersionPolicy()
    if policy == "latest":
        count = _require(table, "count", int, "version_policy")
        if count < 1:
            raise ManifestError("version_policy: count must be at least 1")
        return VersionPolicy(policy="latest", count=count)
    if policy == "specific":
        versions = _require(table, "versions", list, "version_policy")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in versions):
            raise ManifestError("version_policy: versions must be a list of integers")
        return VersionPolicy(policy="specific", versions=tuple(versions))
    raise ManifestError(f"version_policy: unknown policy '{policy}'")


def load_model_defaults(model_dir: Path) -> ModelDefaults:
    """Read ``model.toml`` if present; a model without one gets empty defaults."""
    path = model_dir / MODEL_FILE
    if not path.exists():
        return ModelDefaults()
    data = _read_toml(path)
    labels = data.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ManifestError(f"{MODEL_FILE}: labels must be a list of strings")
    return ModelDefaults(
        description=str(data.get("description", "")),
        labels=tuple(labels),
        version_policy=parse_version_policy(data.get("version_policy")),
    )


def _batching(table: Any, where: str) -> BatchingSpec | None:
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ManifestError(f"{where}: batching must be a table")
    if not table.get("enabled", True):
        return None
    delay = table.get("max_batch_delay_ms", 0.0)
    queue_size = table.get("max_queue_size", 64)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 1000:
        raise ManifestError(f"{where}: batching.max_batch_delay_ms must be between 0 and 1000")
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
        raise ManifestError(f"{where}: batching.max_queue_size must be a positive integer")
    return BatchingSpec(max_batch_delay_ms=float(delay), max_queue_size=queue_size)


def load_version(model: str, version_dir: Path, defaults: ModelDefaults) -> VersionSpec:
    """Parse ``<version_dir>/manifest.toml``; raises :class:`ManifestError` saying what is wrong."""
    data = _read_toml(version_dir / MANIFEST_FILE)
    where = MANIFEST_FILE
    runtime = _require(data, "runtime", str, where)
    artifact = version_dir / _require(data, "artifact", str, where)
    # The artifact must live inside the version directory: a manifest is data, not a pointer
    # to arbitrary files on the server.
    if not artifact.resolve().is_relative_to(version_dir.resolve()):
        raise ManifestError(f"{where}: artifact must be inside the version directory")
    if not artifact.exists():
        raise ManifestError(f"{where}: artifact '{artifact.name}' does not exist")
    inputs = tuple(_tensor(t, f"{where} inputs[{i}]") for i, t in enumerate(data.get("inputs", [])))
    outputs = tuple(
        _tensor(t, f"{where} outputs[{i}]") for i, t in enumerate(data.get("outputs", []))
    )
    if not inputs or not outputs:
        raise ManifestError(f"{where}: at least one input and one output must be declared")
    steps: list[StepSpec] = []
    for i, table in enumerate(data.get("preprocess", [])):
        if not isinstance(table, dict):
            raise ManifestError(f"{where} preprocess[{i}] must be a table")
        params = dict(table)
        name = params.pop("step", None)
        if not isinstance(name, str):
            raise ManifestError(f"{where} preprocess[{i}]: 'step' is required")
        steps.append(StepSpec(step=name, params=_freeze(params)))
    post = data.get("postprocess")
    postprocess = None
    if post is not None:
        if not isinstance(post, dict):
            raise ManifestError(f"{where}: postprocess must be a table")
        labels = post.get("labels", list(defaults.labels))
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ManifestError(f"{where}: postprocess labels must be a list of strings")
        output = post.get("output", outputs[0].name)
        if output not in {t.name for t in outputs}:
            raise ManifestError(f"{where}: postprocess output '{output}' is not a declared output")
        softmax = post.get("softmax", False)
        if not isinstance(softmax, bool):
            raise ManifestError(f"{where}: postprocess softmax must be true or false")
        top_k = post.get("top_k", 1)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ManifestError(f"{where}: postprocess top_k must be a positive integer")
        threshold = post.get("threshold")
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0 <= threshold <= 1
        ):
            raise ManifestError(f"{where}: postprocess threshold must be between 0 and 1")
        postprocess = PostprocessSpec(
            output=output,
            softmax=softmax,
            top_k=top_k,
            labels=tuple(labels),
            threshold=float(threshold) if threshold is not None else None,
            below_threshold_label=str(post.get("below_threshold_label", "unknown")),
        )
    max_batch_size = data.get("max_batch_size", 32)
    if (
        isinstance(max_batch_size, bool)
        or not isinstance(max_batch_size, int)
        or max_batch_size < 1
    ):
        raise ManifestError(f"{where}: max_batch_size must be a positive integer")
    batching = _batching(data.get("batching"), where)
    return VersionSpec(
        batching=batching,
        model=model,
        version=int(version_dir.name),
        path=version_dir,
        runtime=runtime,
        artifact=artifact,
        inputs=inputs,
        outputs=outputs,
        preprocess=tuple(steps),
        postprocess=postprocess,
        max_batch_size=max_batch_size,
        provenance=_freeze(data.get("provenance", {})),
    )


def version_dirs(model_dir: Path) -> dict[int, Path]:
    """Version directories of a model: sub-directories named by a positive integer."""
    found: dict[int, Path] = {}
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) > 0:
            found[int(child.name)] = child
    return found

"""ModelRegistry: which models and versions exist, their load state, and which one answers."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from serving.batching import Batcher
from serving.errors import (
    ManifestError,
    ModelNotFound,
    ModelNotReady,
    RuntimeLoadError,
    ServingError,
    VersionNotFound,
)
from serving.manifest import (
    ModelDefaults,
    VersionPolicy,
    VersionSpec,
    load_model_defaults,
    load_version,
    plain,
    version_dirs,
)
from serving.pipeline import Pipeline, Postprocessor
from serving.runtimes import Runtime, RuntimeFactory
from serving.settings import ServingSettings
from serving.steps import StepContext

log = logging.getLogger("modelgate.serving")


class VersionState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"


@dataclass
class ModelVersion:
    """One version's live state. ``spec`` is None when its manifest could not be parsed."""

    model: str
    version: int
    path: Path
    state: VersionState = VersionState.LOADING
    reason: str = ""
    spec: VersionSpec | None = None
    runtime: Runtime | None = None
    # Requests running on this version now; a version is retired only at zero.
    in_flight: int = 0
    # The owner thread that merges concurrent requests, when the manifest asks for it.
    batcher: Batcher | None = None
    pipeline: Pipeline | None = None
    postprocessor: Postprocessor | None = None
    load_seconds: float | None = None

    def fail(self, reason: str) -> None:
        self.state = VersionState.FAILED
        self.reason = reason
        log.error(
            "version failed to load: %s",
            reason,
            extra={"model": self.model, "version": self.version},
        )


@dataclass
class Model:
    name: str
    path: Path
    defaults: ModelDefaults
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    reason: str = ""

    def ready_versions(self) -> list[ModelVersion]:
        return [v for v in self.versions.values() if v.state is VersionState.READY]

    @property
    def ready(self) -> bool:
        return bool(self.ready_versions())


def _warm_up_inputs(spec: VersionSpec) -> dict[str, np.ndarray]:
    return {t.name: np.zeros((1, *t.item_shape), dtype=t.dtype) for t in spec.inputs}


class ModelRegistry:
    """Discovers the model repository and loads each selected version.

    A version becomes READY only after its runtime loaded and answered a warm-up inference
    whose outputs match the manifest; anything else leaves it FAILED with a reason, and the
    other versions are unaffected.
    """

    def __init__(self, settings: ServingSettings, factories: Mapping[str, RuntimeFactory]) -> None:
        self._settings = settings
        self._factories = dict(factories)
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()
        self._discovered = False
        self._context = StepContext(max_image_pixels=settings.max_image_pixels)

    def discover(self) -> None:
        """Read every manifest under the model root; does not load artifacts."""
        models = {}
        for model_dir in self._model_dirs():
            models[model_dir.name] = self._scan_model(model_dir, None)
        with self._lock:
            self._models = models
            self._discovered = True

    def rescan(
        self,
        in_use: Callable[[str], set[int]],
        version_policy: Callable[[str], VersionPolicy | None] = lambda _model: None,
    ) -> list[ModelVersion]:
        """Pick up version directories (and models) that appeared since the last scan, and
        retire versions whose directory is gone once nothing routes to them and no request
        is running on them. Returns the new versions, still LOADING: call load_pending.

        ``version_policy`` may override a model's version policy (the deployment state's):
        versions it no longer selects retire like removed ones.

        Publish new versions under the model root atomically (write elsewhere, then rename):
        a half-copied directory that fails to load stays FAILED.
        """
        models = dict(self._models)
        added: list[ModelVersion] = []
        for model_dir in self._model_dirs():
            previous = models.get(model_dir.name)
            scanned = self._scan_model(model_dir, previous, version_policy(model_dir.name))
            added += [
                v
                for n, v in scanned.versions.items()
                if previous is None or n not in previous.versions
            ]
            models[model_dir.name] = scanned
        for name, model in models.items():
            override = version_policy(name)
            selected = set((override or model.defaults.version_policy).select(list(model.versions)))
            gone = [
                n for n, v in model.versions.items() if not v.path.exists() or n not in selected
            ]
            keep = dict(model.versions)
            for number in gone:
                version = keep[number]
                if number in in_use(name) or version.in_flight:
                    continue  # retire later: routed to, or answering right now
                if version.batcher is not None:
                    version.batcher.close()
                if version.runtime is not None:
                    version.runtime.unload()
                del keep[number]
                log.info("version retired", extra={"model": name, "version": number})
            if len(keep) != len(model.versions):
                models[name] = dataclasses.replace(model, versions=keep)
        with self._lock:
            self._models = models
        return added

    def _model_dirs(self) -> list[Path]:
        root = self._settings.model_root
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))

    def _scan_model(
        self, model_dir: Path, known: Model | None, override: VersionPolicy | None = None
    ) -> Model:
        """A model's versions: the known ones as they are, new directories parsed."""
        name = model_dir.name
        try:
            defaults = load_model_defaults(model_dir)
        except ManifestError as err:
            if known is not None:
                return known
            model = Model(name=name, path=model_dir, defaults=ModelDefaults(), reason=str(err))
            for number, path in version_dirs(model_dir).items():
                version = ModelVersion(model=name, version=number, path=path)
                version.fail(f"model.toml: {err}")
                model.versions[number] = version
            return model
        versions = dict(known.versions) if known is not None else {}
        available = version_dirs(model_dir)
        for number in (override or defaults.version_policy).select(list(available)):
            if number in versions:
                continue
            version = ModelVersion(model=name, version=number, path=available[number])
            try:
                version.spec = load_version(name, available[number], defaults)
            except ManifestError as err:
                version.fail(self._public(str(err)))
            except Exception as err:
                # A gap in the parser's checks must fail this version, not the whole repo.
                log.exception("unexpected error parsing %s v%s", name, number)
                version.fail(f"manifest.toml: unexpected {type(err).__name__} (see the log)")
            versions[number] = version
        return Model(name=name, path=model_dir, defaults=defaults, versions=versions)

    def _public(self, reason: str) -> str:
        """A reason fit for API clients: no absolute server paths."""
        root = self._settings.model_root
        for prefix in {str(root.resolve()), str(root)}:
            reason = reason.replace(prefix, "<model_root>")
        return reason

    def load_pending(self) -> None:
        """Load every version still LOADING, one after another."""
        for model in list(self._models.values()):
            for version in list(model.versions.values()):
                if version.state is VersionState.LOADING:
                    self._load(version)

    def _load(self, version: ModelVersion) -> None:
        spec = version.spec
        assert spec is not None  # a version without a spec was failed at discovery
        started = time.perf_counter()
        try:
            factory = self._factories.get(spec.runtime)
            if factory is None:
                raise ManifestError(
                    f"unknown runtime '{spec.runtime}' (known: {sorted(self._factories)})"
                )
            pipeline = Pipeline.from_spec(spec, self._context)
            pipeline.self_test()
            postprocessor = Postprocessor(spec.postprocess) if spec.postprocess else None
            runtime = factory(spec, self._settings)
            runtime.load()
            outputs = runtime.predict(_warm_up_inputs(spec))
            for tensor in spec.outputs:
                got = outputs.get(tensor.name)
                if got is None or tuple(got.shape[1:]) != tensor.item_shape:
                    shape = None if got is None else list(got.shape)
                    raise RuntimeLoadError(
                        f"warm-up output '{tensor.name}' has shape {shape}, "
                        f"the manifest declares {list(tensor.shape)}"
                    )
            if postprocessor is not None:
                postprocessor(outputs)
        except ServingError as err:
            version.fail(self._public(err.message))
            return
        except Exception as err:
            log.exception("unexpected error loading %s v%s", spec.model, spec.version)
            version.fail(f"unexpected {type(err).__name__} while loading (see the log)")
            return
        if spec.batching is not None:
            version.batcher = Batcher(
                runtime.predict,
                max_batch_size=spec.max_batch_size,
                max_batch_delay_ms=spec.batching.max_batch_delay_ms,
                max_queue_size=spec.batching.max_queue_size,
                name=f"{spec.model}-{spec.version}",
            )
        version.runtime = runtime
        version.pipeline = pipeline
        version.postprocessor = postprocessor
        version.load_seconds = round(time.perf_counter() - started, 3)
        version.state = VersionState.READY
        log.info(
            "version ready in %.2fs",
            version.load_seconds,
            extra={"model": spec.model, "version": spec.version},
        )

    @property
    def models(self) -> list[Model]:
        return list(self._models.values())

    def model(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"model '{name}' does not exist", details={"model": name})
        return model

    def resolve(self, name: str, version: int | None = None) -> ModelVersion:
        """The version that answers: the pinned one, else the newest READY one."""
        model = self.model(name)
        if version is not None:
            found = model.versions.get(version)
            if found is None:
                raise VersionNotFound(
                    f"model '{name}' has no version {version}",
                    details={"model": name, "version": version},
                )
            if found.state is not VersionState.READY:
                raise ModelNotReady(
                    f"model '{name}' version {version} is {found.state}"
                    + (f": {found.reason}" if found.reason else ""),
                    details={"model": name, "version": version, "state": found.state},
                )
            return found
        ready = model.ready_versions()
        if not ready:
            raise ModelNotReady(f"model '{name}' has no ready version", details={"model": name})
        return max(ready, key=lambda v: v.version)

    @property
    def ready(self) -> bool:
        """Every version has finished loading (READY or FAILED) and at least one is READY."""
        if not self._discovered:
            return False
        versions = [v for m in self._models.values() for v in m.versions.values()]
        return all(v.state is not VersionState.LOADING for v in versions) and any(
            v.state is VersionState.READY for v in versions
        )

    def unload_all(self) -> None:
        for model in self._models.values():
            for version in model.versions.values():
                if version.batcher is not None:
                    version.batcher.close()
                if version.runtime is not None:
                    version.runtime.unload()


def describe_version(version: ModelVersion) -> dict[str, object]:
    """A version's public metadata: state, signature, pipeline and provenance."""
    info: dict[str, object] = {
        "version": version.version,
        "state": str(version.state),
        "reason": version.reason or None,
        "load_seconds": version.load_seconds,
    }
    spec = version.spec
    if spec is not None:
        info.update(
            runtime=spec.runtime,
            max_batch_size=spec.max_batch_size,
            batching=spec.batching.to_dict() if spec.batching else None,
            inputs=[t.to_dict() for t in spec.inputs],
            outputs=[t.to_dict() for t in spec.outputs],
            preprocess=[s.to_dict() for s in spec.preprocess],
            postprocess=spec.postprocess.to_dict() if spec.postprocess else None,
            labels=list(spec.labels),
            provenance=plain(spec.provenance),
        )
    return info


def describe_model(model: Model) -> dict[str, object]:
    """A model's public metadata, versions newest first."""
    return {
        "name": model.name,
        "description": model.defaults.description,
        "ready": model.ready,
        "reason": model.reason or None,
        "labels": list(model.defaults.labels),
        "version_policy": model.defaults.version_policy.to_dict(),
        "versions": [describe_version(v) for _, v in sorted(model.versions.items(), reverse=True)],
    }

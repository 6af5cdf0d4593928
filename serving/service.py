"""InferenceService: the one object every transport (REST, v2, later gRPC and messaging) calls."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from serving.ensemble import combine, load_ensembles
from serving.errors import InferenceFailed, InvalidInput, ModelNotFound, ModelNotReady, ServingError
from serving.pipeline import Item, Prediction
from serving.registry import Model, ModelRegistry, ModelVersion
from serving.routing import Route, Router, RouteReason, RouteRequest, TrafficPolicy
from serving.runtimes import RuntimeFactory, default_factories
from serving.settings import ServingSettings
from serving.stats import PredictionRecord, TrafficStats

log = logging.getLogger("modelgate.serving")


@dataclass(frozen=True)
class PredictResult:
    model: str
    version: int
    predictions: list[Prediction]
    reason: str = RouteReason.PINNED
    variant: str | None = None


@dataclass(frozen=True)
class EnsembleResult:
    """An ensemble's answer: the combined predictions and each member's, side by side."""

    model: str
    predictions: list[Prediction]
    members: list[PredictResult]
    combine: str


@dataclass(frozen=True)
class InferResult:
    model: str
    version: int | None  # None for an ensemble: no single version answered
    outputs: dict[str, np.ndarray]
    reason: str = RouteReason.PINNED
    variant: str | None = None


class InferenceService:
    """Owns the registry; turns items or tensors into answers from the right version."""

    def __init__(
        self,
        settings: ServingSettings,
        factories: Mapping[str, RuntimeFactory] | None = None,
        router: Router | None = None,
    ) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings, factories or default_factories())
        self.router = router or Router()
        self._policies: dict[str, TrafficPolicy] = {}
        self._loader: threading.Thread | None = None
        self._flight = threading.Lock()
        self.stats = TrafficStats()
        # Shadow copies run here, never on the request's thread; at most this many wait, the
        # rest are dropped (a shadow must not slow down or queue up the real traffic).
        self._shadow_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._shadow_slots = threading.BoundedSemaphore(8)
        self._shadow_pending: set[Future[None]] = set()
        self.ensembles = load_ensembles(settings.pipeline_root) if settings.pipeline_root else {}
        self._ensemble_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ensemble")
        self._stop_watching = threading.Event()
        # Interactive requests (and runtime calls) under way; batch jobs wait for none.
        self._interactive = 0
        self._last_interactive = 0.0  # monotonic time the last interactive work ended
        self._idle = threading.Condition(self._flight)

    def start(self) -> None:
        """Discover the repository, then load it (in the background if configured)."""
        self.registry.discover()
        if self.settings.load_in_background:
            self._loader = threading.Thread(
                target=self.registry.load_pending, name="model-loader", daemon=True
            )
            self._loader.start()
        else:
            self.registry.load_pending()

    def wait_loaded(self, timeout_seconds: float) -> bool:
        """Block until background loading ends; True if it did within the timeout."""
        if self._loader is not None:
            self._loader.join(timeout_seconds)
            return not self._loader.is_alive()
        return True

    def rescan(self) -> list[int]:
        """Load version directories that appeared (warm-up and self-test before any traffic
        can reach them) and retire vanished ones nothing routes to; returns the new ones."""

        def policy(model: str) -> TrafficPolicy:
            return self._policies.get(model, TrafficPolicy())

        added = self.registry.rescan(
            lambda model: policy(model).versions_in_use(),
            lambda model: policy(model).version_policy,
        )
        if added:
            self.registry.load_pending()
        return [v.version for v in added]

    def watch(self, interval_seconds: float) -> None:
        """Rescan the model root every interval in a daemon thread, without a restart."""

        def loop() -> None:
            while not self._stop_watching.wait(interval_seconds):
                try:
                    self.rescan()
                except OSError:
                    log.warning("cannot rescan the model root", exc_info=True)

        threading.Thread(target=loop, name="model-watcher", daemon=True).start()

    def stop(self) -> None:
        self._stop_watching.set()
        self._shadow_pool.shutdown(wait=False, cancel_futures=True)
        self.registry.unload_all()

    # -- metadata ---------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return self.registry.ready

    def models(self) -> list[Model]:
        return self.registry.models

    def model(self, name: str) -> Model:
        return self.registry.model(name)

    def version(self, name: str, version: int | None = None) -> ModelVersion:
        """The version a request would be served by; raises if none can serve."""
        return self.registry.resolve(name, version)

    # -- traffic ----------------------------------------------------------------------------

    def policy(self, model: str) -> TrafficPolicy:
        """The traffic policy this process currently applies to ``model``."""
        self.registry.model(model)
        return self._policies.get(model, TrafficPolicy())

    def apply_policy(self, model: str, policy: TrafficPolicy) -> bool:
        """Adopt a policy unless this process already has the same or a newer revision.

        Called by whatever keeps the shared deployment state (the web layer's poller); the
        request path only ever reads the in-memory copy, so it never waits on a database.
        """
        current = self._policies.get(model)
        if current is not None and current.revision >= policy.revision:
            return False
        self._policies[model] = policy
        return True

    def route(self, model: str, request: RouteRequest | None = None) -> tuple[ModelVersion, Route]:
        """The version that answers this request and why; raises if it cannot answer."""
        request = request or RouteRequest()
        ready = {v.version for v in self.registry.model(model).ready_versions()}
        route = self.router.route(model, self.policy(model), ready, request)
        return self.registry.resolve(model, route.version), route

    # -- ensembles ---------------------------------------------------------------------------

    def ensemble_ready(self, name: str) -> bool:
        """Every member model exists and has a ready version (its pinned one, if pinned)."""
        for member in self.ensembles[name].members:
            try:
                model = self.registry.model(member.model)
            except ModelNotFound:
                return False
            ready = {v.version for v in model.ready_versions()}
            if not ready or (member.version is not None and member.version not in ready):
                return False
        return True

    def predict_ensemble(self, name: str, items: Sequence[Item]) -> EnsembleResult:
        """Run every member on the same items in parallel and combine their answers."""
        method, calls = self._ensemble_calls(name)
        futures = [
            self._ensemble_pool.submit(self.predict, model, items, version)
            for model, version in calls
        ]
        members = [future.result() for future in futures]
        first = self.registry.resolve(members[0].model, members[0].version)
        assert first.postprocessor is not None
        predictions = combine(
            method,
            [m.predictions for m in members],
            first.postprocessor.labels,
            first.postprocessor.top_k,
        )
        return EnsembleResult(model=name, predictions=predictions, members=members, combine=method)

    def _ensemble_calls(self, name: str) -> tuple[str, list[tuple[str, int | None]]]:
        spec = self.ensembles.get(name)
        if spec is None:
            raise ModelNotFound(f"ensemble '{name}' does not exist", details={"model": name})
        calls: list[tuple[str, int | None]] = []
        for member in spec.members:
            if member.every_ready_version:
                ready = self.registry.model(member.model).ready_versions()
                calls += [(member.model, v.version) for v in sorted(ready, key=lambda v: v.version)]
            else:
                calls.append((member.model, member.version))
        if not calls:
            raise ModelNotReady(f"ensemble '{name}' has no ready member", details={"model": name})
        return spec.combine, calls

    def ensemble_signature(self, name: str) -> list[ModelVersion]:
        """The versions an ensemble would run now; their tensor inputs must be identical for
        the ensemble to take tensors (v2), since one request feeds all of them."""
        _, calls = self._ensemble_calls(name)
        # An unpinned member answers as the model would: through its traffic policy.
        targets = [
            self.route(model)[0] if version is None else self.registry.resolve(model, version)
            for model, version in calls
        ]
        first = targets[0].spec
        assert first is not None
        for target in targets[1:]:
            assert target.spec is not None
            if target.spec.inputs != first.inputs:
                raise InvalidInput(
                    f"the members of ensemble '{name}' take different tensors; send items "
                    f"(images or features) to /api/models/{name}/predict instead",
                    details={"model": name},
                )
        return targets

    def infer_ensemble(self, name: str, inputs: Mapping[str, np.ndarray]) -> InferResult:
        """Tensors through every member in parallel; the answer is tensors too: ``label``
        (BYTES) and ``probabilities`` (average) or ``score`` (vote share), plus, for
        ``all``, each member's probabilities as ``<model>_v<version>``."""
        targets = self.ensemble_signature(name)
        method = self.ensembles[name].combine
        futures = [
            self._ensemble_pool.submit(self.infer, t.model, inputs, t.version) for t in targets
        ]
        answers: list[list[Prediction]] = []
        for target, future in zip(targets, futures, strict=True):
            result = future.result()
            if target.postprocessor is None:
                raise InvalidInput(
                    f"member '{target.model}' declares no post-processing to combine",
                    details={"model": name},
                )
            answers.append(target.postprocessor(result.outputs))
        first = targets[0].postprocessor
        assert first is not None
        combined = combine(method, answers, first.labels, first.top_k)
        outputs: dict[str, np.ndarray] = {
            "label": np.array([p.label.encode() for p in combined], dtype=np.object_)
        }
        if method == "average":
            outputs["probabilities"] = np.array([p.scores for p in combined], dtype=np.float32)
        else:
            outputs["score"] = np.array([p.score for p in combined], dtype=np.float32)
        if method == "all":
            for target, answer in zip(targets, answers, strict=True):
                outputs[f"{target.model}_v{target.version}"] = np.array(
                    [p.scores for p in answer], dtype=np.float32
                )
        return InferResult(model=name, version=None, outputs=outputs, reason="ensemble")

    # -- inference --------------------------------------------------------------------------

    def predict(
        self,
        model: str,
        items: Sequence[Item],
        version: int | None = None,
        *,
        route: RouteRequest | None = None,
        request_id: str | None = None,
    ) -> PredictResult:
        """Pre-process every item, run them as batches, post-process to labelled predictions.

        Requests routed by an experiment are counted per variant (and logged under
        ``request_id`` for feedback); a shadow copy, if drawn, runs in the background.
        """
        started = time.perf_counter()
        target, chosen = self.route(model, route or RouteRequest(version=version))
        try:
            result = self._predict_on(target, chosen, model, items)
        except ServingError as err:
            if chosen.variant is not None and int(err.status) >= 500:
                self._record_variant(model, chosen, started, None, error=True)
            raise
        labels = [p.label for p in result.predictions]
        if chosen.variant is not None:
            self._record_variant(model, chosen, started, labels, error=False)
            if request_id is not None:
                experiment = self.policy(model).experiment
                self.stats.log_prediction(
                    PredictionRecord(
                        request_id=request_id,
                        model=model,
                        experiment=experiment.name if experiment else "",
                        variant=chosen.variant,
                        version=result.version,
                        label=labels[0] if len(labels) == 1 else None,
                    )
                )
        if chosen.shadow_version is not None:
            self._shadow(model, chosen.shadow_version, items, result.predictions)
        return result

    def _record_variant(
        self, model: str, chosen: Route, started: float, labels: list[str] | None, *, error: bool
    ) -> None:
        experiment = self.policy(model).experiment
        self.stats.record_variant(
            model,
            experiment.name if experiment else "",
            chosen.variant or "",
            (time.perf_counter() - started) * 1000,
            labels,
            error,
        )

    def _shadow(
        self, model: str, version: int, items: Sequence[Item], primary: list[Prediction]
    ) -> None:
        if not self._shadow_slots.acquire(blocking=False):
            self.stats.record_shadow_dropped(model, version)
            return

        def compare() -> None:
            try:
                target = self.registry.resolve(model, version)
                shadow = self._predict_on(target, Route(version, RouteReason.PINNED), model, items)
                for mine, theirs in zip(primary, shadow.predictions, strict=True):
                    self.stats.record_shadow(
                        model, version, mine.label == theirs.label, mine.score - theirs.score
                    )
            except ServingError:
                self.stats.record_shadow_error(model, version)
            finally:
                self._shadow_slots.release()

        future = self._shadow_pool.submit(compare)
        self._shadow_pending.add(future)
        future.add_done_callback(self._shadow_pending.discard)

    def wait_shadows(self, timeout_seconds: float) -> bool:
        """Wait until every shadow copy submitted so far was compared; True if they were."""
        _, pending = wait(list(self._shadow_pending), timeout=timeout_seconds)
        return not pending

    def _predict_on(
        self, target: ModelVersion, chosen: Route, model: str, items: Sequence[Item]
    ) -> PredictResult:
        if not items:
            raise InvalidInput("no items to predict")
        if len(items) > self.settings.max_items_per_request:
            raise InvalidInput(
                f"{len(items)} items in one request; at most "
                f"{self.settings.max_items_per_request} are accepted"
            )
        assert target.pipeline is not None and target.spec is not None
        if target.postprocessor is None:
            raise InvalidInput(
                f"model '{model}' declares no post-processing; use the tensor (v2) API",
                details={"model": model},
            )
        rows = [target.pipeline.transform(item, i) for i, item in enumerate(items)]
        batch = {target.spec.inputs[0].name: np.stack(rows)}
        outputs = self._run(target, batch)
        return PredictResult(
            model=model,
            version=target.version,
            predictions=target.postprocessor(outputs),
            reason=chosen.reason,
            variant=chosen.variant,
        )

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: int | None = None,
        *,
        route: RouteRequest | None = None,
    ) -> InferResult:
        """Run named tensors that already match the signature; raises InvalidInput otherwise.

        Experiment requests are counted per variant (raw tensors carry no labels); shadows
        apply to labelled predictions only.
        """
        started = time.perf_counter()
        target, chosen = self.route(model, route or RouteRequest(version=version))
        try:
            outputs = self._infer_on(target, model, inputs)
        except ServingError as err:
            if chosen.variant is not None and int(err.status) >= 500:
                self._record_variant(model, chosen, started, None, error=True)
            raise
        if chosen.variant is not None:
            self._record_variant(model, chosen, started, None, error=False)
        return InferResult(
            model=model,
            version=target.version,
            outputs=outputs,
            reason=chosen.reason,
            variant=chosen.variant,
        )

    def _infer_on(
        self, target: ModelVersion, model: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        assert target.spec is not None
        declared = {t.name: t for t in target.spec.inputs}
        unknown = sorted(set(inputs) - set(declared))
        missing = sorted(set(declared) - set(inputs))
        if unknown or missing:
            raise InvalidInput(
                f"inputs do not match the signature of '{model}': expected {sorted(declared)}",
                details={"expected": sorted(declared), "missing": missing, "unknown": unknown},
            )
        batch_sizes = set()
        for name, array in inputs.items():
            spec = declared[name]
            if array.dtype != spec.dtype:
                raise InvalidInput(
                    f"input '{name}' must be {spec.datatype}",
                    details={"input": name, "expected": spec.datatype, "got": str(array.dtype)},
                )
            if array.ndim != len(spec.shape) or array.shape[1:] != spec.item_shape:
                raise InvalidInput(
                    f"input '{name}' expects shape {list(spec.shape)}, got {list(array.shape)}",
                    details={"input": name, "expected": list(spec.shape), "got": list(array.shape)},
                )
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise InvalidInput(f"input '{name}' contains NaN or infinite values")
            batch_sizes.add(array.shape[0])
        if len(batch_sizes) != 1 or 0 in batch_sizes:
            raise InvalidInput("every input must carry the same, non-zero number of items")
        return self._run(target, inputs)

    def predict_background(
        self,
        model: str,
        version: int,
        items: Sequence[Item],
        *,
        max_wait_seconds: float = 0.5,
    ) -> list[Prediction | ServingError]:
        """Batch-job work: each item's prediction, or the error that item alone hit.

        It runs after interactive requests: it first waits (up to ``max_wait_seconds``, so a
        busy server still makes progress) until no interactive call is under way, and calls
        the runtime directly rather than queueing in the version's batcher ahead of them.
        """
        target = self.registry.resolve(model, version)
        assert target.pipeline is not None and target.spec is not None
        if target.postprocessor is None:
            raise InvalidInput(f"model '{model}' declares no post-processing")
        self.wait_idle(max_wait_seconds)
        answers: list[Prediction | ServingError | None] = [None] * len(items)
        rows, good = [], []
        for i, item in enumerate(items):
            try:
                rows.append(target.pipeline.transform(item, i))
                good.append(i)
            except ServingError as err:
                answers[i] = err
        if rows:
            batch = {target.spec.inputs[0].name: np.stack(rows)}
            postprocess = target.postprocessor
            outcome: list[Prediction | ServingError]
            try:
                outcome = list(postprocess(self._run(target, batch, background=True)))
            except InferenceFailed:
                # One bad row (a NaN out, say) must not fail its neighbours: retry one by one.
                outcome = []
                for row in rows:
                    single = {target.spec.inputs[0].name: row[np.newaxis]}
                    try:
                        outcome += postprocess(self._run(target, single, background=True))
                    except ServingError as err:
                        outcome.append(err)
            except ServingError as err:
                outcome = [err] * len(good)
            for i, answer in zip(good, outcome, strict=True):
                answers[i] = answer
        return [a for a in answers if a is not None]

    def enter_interactive(self) -> None:
        """A transport starts handling a request: background work now waits. Counting the
        whole request, not only its runtime call, keeps jobs out of parsing and encoding too."""
        with self._flight:
            self._interactive += 1

    def leave_interactive(self) -> None:
        with self._flight:
            self._interactive -= 1
            self._last_interactive = time.monotonic()
            if self._interactive == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout_seconds: float, quiet_seconds: float = 0.01) -> bool:
        """Block until no interactive work is under way and none ended in the last
        ``quiet_seconds`` (clients on keep-alive send their next request right after the
        last answer: a gap that short is not idleness); True if that happened in time."""
        deadline = time.monotonic() + timeout_seconds
        with self._idle:
            while True:
                remaining = deadline - time.monotonic()
                if not self._idle.wait_for(lambda: self._interactive == 0, max(0, remaining)):
                    return False
                quiet_for = time.monotonic() - self._last_interactive
                if quiet_for >= quiet_seconds:
                    return True
                if remaining <= 0:
                    return False
                self._idle.wait(min(quiet_seconds - quiet_for, remaining))

    def _run(
        self, target: ModelVersion, inputs: Mapping[str, np.ndarray], *, background: bool = False
    ) -> dict[str, np.ndarray]:
        """Feed the runtime batches of at most the version's ``max_batch_size``."""
        assert target.runtime is not None and target.spec is not None
        with self._flight:
            target.in_flight += 1
        if not background:
            self.enter_interactive()  # in-process callers that no transport counted
        try:
            return self._run_batches(target, inputs, background)
        finally:
            if not background:
                self.leave_interactive()
            with self._flight:
                target.in_flight -= 1

    def _run_batches(
        self, target: ModelVersion, inputs: Mapping[str, np.ndarray], background: bool
    ) -> dict[str, np.ndarray]:
        assert target.runtime is not None and target.spec is not None
        size = next(iter(inputs.values())).shape[0]
        step = target.spec.max_batch_size
        chunks: list[dict[str, np.ndarray]] = []
        for start in range(0, size, step):
            part = {k: v[start : start + step] for k, v in inputs.items()}
            try:
                batcher = None if background else target.batcher
                run = batcher.submit if batcher else target.runtime.predict
                chunks.append(run(part))
            except ServingError:
                raise
            except Exception as err:
                log.exception(
                    "runtime failed", extra={"model": target.model, "version": target.version}
                )
                raise InferenceFailed(
                    f"model '{target.model}' version {target.version} failed to run the batch"
                ) from err
        outputs = (
            chunks[0]
            if len(chunks) == 1
            else {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        )
        for name, array in outputs.items():
            # NaN and Infinity are not JSON; an answer containing them would be unreadable.
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                log.error(
                    "non-finite output '%s'",
                    name,
                    extra={"model": target.model, "version": target.version},
                )
                raise InferenceFailed(
                    f"model '{target.model}' version {target.version} produced NaN or "
                    "infinite values"
                )
        return outputs

"""Traffic policy and Router: which version answers a request, and why.

Precedence, strongest first: a pinned version (``/versions/<v>/``), a label
(``/labels/<label>/``), the model's experiment (sticky when the request carries a key), the
weights (canary), the ``stable`` label, the newest ready version. Randomness is injected so
tests are exact, and stickiness hashes with SHA-256 so every worker and replica agrees.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

from serving.errors import InvalidInput, ManifestError, ModelNotReady, ServingError, VersionNotFound
from serving.manifest import VersionPolicy, parse_version_policy

STABLE = "stable"
CANARY = "canary"


class RouteReason(StrEnum):
    PINNED = "pinned"
    LABEL = "label"
    STICKY = "sticky"
    EXPERIMENT = "experiment"
    WEIGHTED = "weighted"
    STABLE = "stable"
    LATEST = "latest"


class LabelNotFound(VersionNotFound):
    code = "label_not_found"


class PolicyConflict(ServingError):
    """The change does not apply to the current state (nothing to roll back to, ...)."""

    status = HTTPStatus.CONFLICT
    code = "conflict"


@dataclass(frozen=True)
class Variant:
    name: str
    version: int
    weight: float


@dataclass(frozen=True)
class Experiment:
    """An A/B test: variants with weights; ``sticky`` names where the key comes from
    (``subject``: the caller's identity, ``api_key``, or ``header:<Name>``)."""

    name: str
    variants: tuple[Variant, ...]
    sticky: str = "subject"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sticky": self.sticky,
            "variants": [
                {"name": v.name, "version": v.version, "weight": v.weight} for v in self.variants
            ],
        }


@dataclass(frozen=True)
class Shadow:
    """A copy of ``percent`` % of requests also goes to ``version``; its answer is compared,
    never returned."""

    version: int
    percent: float

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "percent": self.percent}


def freeze(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class TrafficPolicy:
    """A model's deployment state at one revision. Values, never mutated: a change is a new
    policy with the next revision."""

    revision: int = 0
    labels: Mapping[str, int] = field(default_factory=lambda: freeze({}))
    weights: Mapping[int, float] = field(default_factory=lambda: freeze({}))
    experiment: Experiment | None = None
    shadow: Shadow | None = None
    # Earlier stable versions, most recent last: what `rollback` returns to.
    history: tuple[int, ...] = ()
    # Which versions are loaded at all; None: the model.toml's.
    version_policy: VersionPolicy | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "labels": dict(self.labels),
            "weights": {str(v): w for v, w in self.weights.items()},
            "experiment": self.experiment.to_dict() if self.experiment else None,
            "shadow": self.shadow.to_dict() if self.shadow else None,
            "history": list(self.history),
            "version_policy": self.version_policy.to_dict() if self.version_policy else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrafficPolicy:
        """Parse a stored or declared policy; raises InvalidInput saying what is wrong."""
        try:
            labels = {str(k): int(v) for k, v in dict(data.get("labels", {})).items()}
            weights = {int(k): float(v) for k, v in dict(data.get("weights", {})).items()}
            raw_experiment = data.get("experiment")
            experiment = None
            if raw_experiment:
                experiment = Experiment(
                    name=str(raw_experiment["name"]),
                    sticky=str(raw_experiment.get("sticky", "subject")),
                    variants=tuple(
                        Variant(
                            name=str(v["name"]),
                            version=int(v["version"]),
                            weight=float(v["weight"]),
                        )
                        for v in raw_experiment["variants"]
                    ),
                )
            raw_shadow = data.get("shadow")
            shadow = None
            if raw_shadow:
                shadow = Shadow(
                    version=int(raw_shadow["version"]), percent=float(raw_shadow["percent"])
                )
            raw_versions = data.get("version_policy")
            policy = cls(
                version_policy=parse_version_policy(raw_versions) if raw_versions else None,
                revision=int(data.get("revision", 0)),
                labels=freeze(labels),
                weights=freeze(weights),
                experiment=experiment,
                shadow=shadow,
                history=tuple(int(v) for v in data.get("history", ())),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidInput(f"invalid traffic policy: {err}") from err
        except ManifestError as err:
            raise InvalidInput(f"invalid version policy: {err.message}") from err
        policy.validate()
        return policy

    def validate(self) -> None:
        if any(w < 0 for w in self.weights.values()) or (
            self.weights and abs(sum(self.weights.values()) - 100.0) > 1e-6
        ):
            raise InvalidInput("weights must be non-negative percentages that add up to 100")
        if self.experiment is not None:
            variants = self.experiment.variants
            if len(variants) < 2 or len({v.name for v in variants}) != len(variants):
                raise InvalidInput("an experiment needs two or more distinctly named variants")
            if (
                any(v.weight < 0 for v in variants)
                or abs(sum(v.weight for v in variants) - 100.0) > 1e-6
            ):
                raise InvalidInput("variant weights must be percentages that add up to 100")
            sticky = self.experiment.sticky
            if sticky not in ("subject", "api_key") and not (
                sticky.startswith("header:") and len(sticky) > len("header:")
            ):
                raise InvalidInput("sticky must be subject, api_key or header:<Name>")
        if self.shadow is not None and not 0 < self.shadow.percent <= 100:
            raise InvalidInput("a shadow's percent must be in (0, 100]")

    def versions_in_use(self) -> set[int]:
        """Versions that a label, a weight, the experiment or the shadow points at."""
        used = set(self.labels.values()) | {v for v, w in self.weights.items() if w > 0}
        if self.experiment:
            used |= {v.version for v in self.experiment.variants}
        if self.shadow:
            used.add(self.shadow.version)
        return used


@dataclass(frozen=True)
class RouteRequest:
    version: int | None = None
    label: str | None = None
    # The experiment's sticky key for this caller (already chosen by the transport).
    sticky_key: str | None = None


@dataclass(frozen=True)
class Route:
    version: int
    reason: RouteReason
    variant: str | None = None
    shadow_version: int | None = None


def sticky_bucket(experiment: str, key: str) -> float:
    """A position in [0, 1) that depends only on the experiment and the key."""
    digest = hashlib.sha256(f"{experiment}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(weighted: list[tuple[Any, float]], position: float) -> Any:
    total = sum(w for _, w in weighted)
    cumulative = 0.0
    for item, weight in weighted:
        cumulative += weight / total
        if position < cumulative:
            return item
    return weighted[-1][0]


class Router:
    """Chooses a version for a request from a policy and the set of READY versions."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def route(
        self, model: str, policy: TrafficPolicy, ready: Collection[int], request: RouteRequest
    ) -> Route:
        route = self._primary(model, policy, ready, request)
        shadow = policy.shadow
        if (
            shadow is not None
            and shadow.version != route.version
            and shadow.version in ready
            and self._rng.random() * 100 < shadow.percent
        ):
            return Route(route.version, route.reason, route.variant, shadow.version)
        return route

    def _primary(
        self, model: str, policy: TrafficPolicy, ready: Collection[int], request: RouteRequest
    ) -> Route:
        if request.version is not None:
            return Route(request.version, RouteReason.PINNED)
        if request.label is not None:
            if request.label not in policy.labels:
                raise LabelNotFound(
                    f"model '{model}' has no label '{request.label}'",
                    details={"model": model, "label": request.label},
                )
            return Route(policy.labels[request.label], RouteReason.LABEL)
        experiment = policy.experiment
        if experiment is not None:
            live = [
                (v, v.weight) for v in experiment.variants if v.version in ready and v.weight > 0
            ]
            if live:
                if request.sticky_key:
                    variant = _pick(live, sticky_bucket(experiment.name, request.sticky_key))
                    return Route(variant.version, RouteReason.STICKY, variant.name)
                variant = _pick(live, self._rng.random())
                return Route(variant.version, RouteReason.EXPERIMENT, variant.name)
        weighted = [(v, w) for v, w in sorted(policy.weights.items()) if v in ready and w > 0]
        if weighted:
            return Route(_pick(weighted, self._rng.random()), RouteReason.WEIGHTED)
        stable = policy.labels.get(STABLE)
        if stable is not None and stable in ready:
            return Route(stable, RouteReason.STABLE)
        if not ready:
            raise ModelNotReady(f"model '{model}' has no ready version", details={"model": model})
        return Route(max(ready), RouteReason.LATEST)


# -- rollout steps: pure functions from one policy to the next ---------------------------------


def promote(policy: TrafficPolicy, version: int) -> TrafficPolicy:
    """Blue-green: ``stable`` moves to ``version`` and takes all traffic; the previous stable
    is remembered for ``rollback``."""
    labels = {k: v for k, v in policy.labels.items() if k != CANARY}
    previous = policy.labels.get(STABLE)
    labels[STABLE] = version
    history = policy.history
    if previous is not None and previous != version:
        history = (*history, previous)
    return dataclasses.replace(policy, labels=freeze(labels), weights=freeze({}), history=history)


def rollback(policy: TrafficPolicy) -> TrafficPolicy:
    """``stable`` returns to the previous stable version; raises PolicyConflict if none."""
    if not policy.history:
        raise PolicyConflict("there is no earlier stable version to roll back to")
    labels = {k: v for k, v in policy.labels.items() if k != CANARY}
    labels[STABLE] = policy.history[-1]
    return dataclasses.replace(
        policy, labels=freeze(labels), weights=freeze({}), history=policy.history[:-1]
    )


def canary(policy: TrafficPolicy, version: int, percent: float) -> TrafficPolicy:
    """``percent`` % of traffic to ``version``, the rest to stable; 0 % is a dark launch."""
    stable = policy.labels.get(STABLE)
    if stable is None:
        raise PolicyConflict("set a stable version (promote) before a canary")
    if stable == version:
        raise PolicyConflict("the canary version is already the stable one")
    if not 0 <= percent <= 100:
        raise InvalidInput("percent must be between 0 and 100")
    return dataclasses.replace(
        policy,
        labels=freeze({**policy.labels, CANARY: version}),
        weights=freeze({stable: 100.0 - percent, version: percent}),
    )


def end_canary(policy: TrafficPolicy) -> TrafficPolicy:
    labels = {k: v for k, v in policy.labels.items() if k != CANARY}
    return dataclasses.replace(policy, labels=freeze(labels), weights=freeze({}))

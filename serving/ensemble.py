"""Ensembles declared as data: several models or versions on the same input, combined.

``pipelines/<name>.toml``::

    description = "digits v1 and v2, probabilities averaged"
    combine = "average"          # average | vote | all
    [[members]]
    model = "digits"
    version = 1                  # omit to let the model's traffic policy choose
    [[members]]
    model = "digits"
    versions = "ready"           # every READY version of the model, at request time
"""

from __future__ import annotations

import logging
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import InvalidInput, ManifestError
from serving.pipeline import Prediction, rank

log = logging.getLogger("modelgate.serving")

COMBINE = ("average", "vote", "all")


@dataclass(frozen=True)
class Member:
    model: str
    version: int | None = None
    every_ready_version: bool = False

    def to_dict(self) -> dict[str, Any]:
        if self.every_ready_version:
            return {"model": self.model, "versions": "ready"}
        return {"model": self.model, "version": self.version}


@dataclass(frozen=True)
class EnsembleSpec:
    name: str
    description: str
    combine: str
    members: tuple[Member, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "ensemble",
            "description": self.description,
            "combine": self.combine,
            "members": [m.to_dict() for m in self.members],
        }


def _member(raw: Any, where: str) -> Member:
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), str):
        raise ManifestError(f"{where}: a member needs a 'model'")
    if raw.get("versions") == "ready":
        return Member(model=raw["model"], every_ready_version=True)
    version = raw.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ManifestError(f"{where}: 'version' must be an integer")
    return Member(model=raw["model"], version=version)


def load_ensembles(root: Path) -> dict[str, EnsembleSpec]:
    """Every ``*.toml`` in ``root``; a malformed file is logged and left out."""
    found: dict[str, EnsembleSpec] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.glob("*.toml")):
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
            combine = data.get("combine", "average")
            if combine not in COMBINE:
                raise ManifestError(f"combine must be one of {COMBINE}")
            members = tuple(_member(m, path.name) for m in data.get("members", []))
            if not members:
                raise ManifestError("an ensemble needs members")
            found[path.stem] = EnsembleSpec(
                name=path.stem,
                description=str(data.get("description", "")),
                combine=combine,
                members=members,
            )
        except (OSError, tomllib.TOMLDecodeError, ManifestError) as err:
            log.error("ensemble %s left out: %s", path.name, err)
    return found


def combine(
    method: str, answers: list[list[Prediction]], labels: tuple[str, ...], top_k: int
) -> list[Prediction]:
    """Per item: the average of the members' probabilities, or their majority vote (ties to
    the higher mean probability); ``all`` keeps the members side by side and heads them with
    the vote."""
    combined = []
    for per_member in zip(*answers, strict=True):
        if method == "average":
            widths = {len(p.scores) for p in per_member}
            if len(widths) != 1:
                raise InvalidInput("the ensemble's members do not share their classes")
            mean = np.mean([p.scores for p in per_member], axis=0)
            combined.append(rank(mean, labels, top_k))
        else:
            votes = Counter(p.label for p in per_member)
            best = max(votes.values())
            tied = [label for label, n in votes.items() if n == best]
            mean_score = {
                label: np.mean([p.score for p in per_member if p.label == label]) for label in tied
            }
            winner = max(tied, key=lambda label: mean_score[label])
            share = round(best / len(per_member), 6)
            combined.append(
                Prediction(
                    label=winner,
                    score=share,
                    top_k=tuple(
                        (label, round(n / len(per_member), 6)) for label, n in votes.most_common()
                    ),
                )
            )
    return combined

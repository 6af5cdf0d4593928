"""Tabular steps: named JSON features to a feature vector in the model's order."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from serving.errors import InvalidInput
from serving.steps import StepContext


@dataclass(frozen=True)
class Features:
    """Order named features as the model expects; fill declared defaults; refuse the rest.

    Unknown names are refused rather than ignored: a misspelt feature silently replaced by a
    default is a wrong prediction nobody notices.
    """

    names: tuple[str, ...]
    defaults: Mapping[str, float]
    consumes: ClassVar[str] = "features"
    produces: ClassVar[str] = "array"

    @classmethod
    def from_params(cls, params: Mapping[str, Any], context: StepContext) -> Features:
        names = tuple(str(n) for n in params["names"])
        if not names or len(set(names)) != len(names):
            raise ValueError("names must be a non-empty list of distinct strings")
        defaults = {str(k): float(v) for k, v in dict(params.get("defaults", {})).items()}
        if not set(defaults) <= set(names):
            raise ValueError("defaults name features that are not in names")
        return cls(names=names, defaults=defaults)

    def __call__(self, value: Mapping[str, Any]) -> np.ndarray:
        unknown = sorted(set(value) - set(self.names))
        if unknown:
            raise InvalidInput(
                f"unknown feature(s) {unknown}",
                details={"expected": list(self.names), "unknown": unknown},
            )
        row: list[float] = []
        for name in self.names:
            if name in value:
                raw = value[name]
                if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                    raise InvalidInput(
                        f"feature '{name}' must be a number, got {type(raw).__name__}",
                        details={"feature": name},
                    )
                if not math.isfinite(raw):
                    raise InvalidInput(
                        f"feature '{name}' must be finite", details={"feature": name}
                    )
                row.append(float(raw))
            elif name in self.defaults:
                row.append(self.defaults[name])
            else:
                missing = [n for n in self.names if n not in value and n not in self.defaults]
                raise InvalidInput(
                    f"missing feature(s) {missing}",
                    details={"expected": list(self.names), "missing": missing},
                )
        return np.asarray(row, dtype=np.float64)

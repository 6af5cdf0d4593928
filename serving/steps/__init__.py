"""The registry of pre-processing step types a manifest may declare.

Each step converts one item: ``consumes`` names what it takes and ``produces`` what it returns
(``bytes`` an encoded file, ``image`` a Pillow image, ``features`` a mapping of named values,
``array`` a numpy array). The pipeline checks that declared steps chain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from serving.errors import ManifestError


@dataclass(frozen=True)
class StepContext:
    """What a step may need to know beyond its own parameters."""

    max_image_pixels: int


class Step(Protocol):
    consumes: ClassVar[str]
    produces: ClassVar[str]

    def __call__(self, value: Any) -> Any: ...


StepFactory = Callable[[Mapping[str, Any], StepContext], Step]


def _registry() -> dict[str, StepFactory]:
    from serving.steps import image, tabular

    return {
        "decode_image": image.DecodeImage.from_params,
        "digit_ink": image.DigitInk.from_params,
        "resize": image.Resize.from_params,
        "to_array": image.ToArray.from_params,
        "features": tabular.Features.from_params,
    }


def build_step(name: str, params: Mapping[str, Any], context: StepContext) -> Step:
    """Build a declared step; raises :class:`ManifestError` for unknown types or bad params."""
    factories = _registry()
    if name not in factories:
        raise ManifestError(f"unknown pre-processing step '{name}' (known: {sorted(factories)})")
    try:
        return factories[name](params, context)
    except (TypeError, ValueError, KeyError) as err:
        raise ManifestError(f"step '{name}': invalid parameters: {err}") from err

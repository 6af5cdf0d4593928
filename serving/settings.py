"""The serving core's settings: built once by the application factory, frozen, passed in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServingSettings:
    model_root: Path
    # Ensembles declared as data (pipelines/<name>.toml); None: no ensembles.
    pipeline_root: Path | None = None
    # Load models in a background thread so the process answers liveness while they load.
    load_in_background: bool = True
    # One thread per interpreter: gunicorn already runs several workers and threads on few cores.
    tflite_threads: int = 1
    tf_intra_op_threads: int = 1
    max_image_pixels: int = 25_000_000
    max_items_per_request: int = 256

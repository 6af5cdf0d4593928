"""Builds a small model repository on disk whose versions run on the fake runtime."""

from __future__ import annotations

from pathlib import Path

TAB_MANIFEST = """
runtime = "fake"
artifact = "model.bin"
max_batch_size = {max_batch_size}

[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 3]

[[outputs]]
name = "scores"
datatype = "FP32"
shape = [-1, 3]

[[preprocess]]
step = "features"
names = ["a", "b", "c"]
defaults = {{ c = 0.0 }}

[postprocess]
softmax = false
top_k = 2

[provenance]
dataset = "none"
"""

IMG_MANIFEST = """
runtime = "fake"
artifact = "model.bin"

[[inputs]]
name = "pixels"
datatype = "FP32"
shape = [-1, 4, 4, 1]

[[outputs]]
name = "logits"
datatype = "FP32"
shape = [-1, 2]

[[preprocess]]
step = "decode_image"
mode = "L"

[[preprocess]]
step = "resize"
size = [4, 4]
policy = "stretch"

[[preprocess]]
step = "to_array"
scale = 0.00392156862745098

[postprocess]
softmax = true
top_k = 2
labels = ["first", "second"]
"""


def write_version(root: Path, model: str, version: int, manifest: str) -> Path:
    path = root / model / str(version)
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.toml").write_text(manifest)
    (path / "model.bin").write_bytes(b"fake")
    return path


def build(root: Path) -> Path:
    """``tab`` v1 and v2 (v2 batches by 2) plus a broken v3; ``img`` v1."""
    (root / "tab").mkdir(parents=True)
    (root / "tab" / "model.toml").write_text(
        'description = "three features"\nlabels = ["a", "b", "c"]\n'
    )
    write_version(root, "tab", 1, TAB_MANIFEST.format(max_batch_size=32))
    write_version(root, "tab", 2, TAB_MANIFEST.format(max_batch_size=2))
    write_version(root, "tab", 3, "runtime = 'fake'\nartifact = [broken")
    write_version(root, "img", 1, IMG_MANIFEST)
    return root

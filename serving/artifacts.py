"""A version's artifact as one downloadable file, with its SHA-256.

A TFLite model is already one file (what a phone or an edge device loads); a SavedModel is a
directory, sent as a zip whose bytes depend only on the files (sorted names, fixed times), so
the digest of a version never changes between downloads or replicas.
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from serving.errors import ModelNotReady
from serving.registry import ModelVersion

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Artifact:
    filename: str
    media_type: str
    data: bytes

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _zip_directory(root: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            info = zipfile.ZipInfo(f"{root.name}/{path.relative_to(root).as_posix()}", _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


@functools.lru_cache(maxsize=8)
def _packed(path: Path, stem: str) -> Artifact:
    # A version directory never changes, so its bytes and digest are computed once.
    if path.is_dir():
        return Artifact(f"{stem}-{path.name}.zip", "application/zip", _zip_directory(path))
    return Artifact(f"{stem}{path.suffix}", "application/octet-stream", path.read_bytes())


def artifact_of(version: ModelVersion) -> Artifact:
    """The served artifact of ``version``; raises ModelNotReady if its manifest is unreadable."""
    if version.spec is None:
        raise ModelNotReady(
            f"model '{version.model}' version {version.version} has no readable manifest",
            details={"model": version.model, "version": version.version},
        )
    return _packed(version.spec.artifact, f"{version.model}-v{version.version}")

"""Install an uploaded version archive into the model repository, safely and atomically."""

from __future__ import annotations

import io
import shutil
import tarfile
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from serving.errors import InvalidInput, ManifestError, PayloadTooLarge
from serving.manifest import (
    MANIFEST_FILE,
    ModelDefaults,
    load_model_defaults,
    load_version,
    version_dirs,
)

MAX_MEMBERS = 1000


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")) or "\\" in name:
        raise InvalidInput(f"the archive member '{name}' points outside the version")
    return path


def _extract_zip(data: bytes, target: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise InvalidInput(f"the archive has more than {MAX_MEMBERS} files")
        if sum(m.file_size for m in members) > max_bytes:
            raise PayloadTooLarge(f"the archive unpacks to more than {max_bytes} bytes")
        for member in members:
            path = _safe_name(member.filename)
            # The mode bits of a zip entry say whether it is a symbolic link.
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise InvalidInput(f"the archive member '{member.filename}' is a link")
            destination = target / path
            if member.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            # zipfile stops reading a member at its declared size (bounded above) and checks
            # its CRC, so a lying header cannot inflate it.
            with archive.open(member) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)


def _extract_tar(data: bytes, target: Path, max_bytes: int) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        members = archive.getmembers()
        if len(members) > MAX_MEMBERS:
            raise InvalidInput(f"the archive has more than {MAX_MEMBERS} files")
        if sum(m.size for m in members if m.isfile()) > max_bytes:
            raise PayloadTooLarge(f"the archive unpacks to more than {max_bytes} bytes")
        for member in members:
            _safe_name(member.name)
            if not (member.isfile() or member.isdir()):
                raise InvalidInput(f"the archive member '{member.name}' is not a plain file")
        # The "data" filter refuses links, devices and paths leaving the target as well.
        archive.extractall(target, members=members, filter="data")


def install_version(
    root: Path, model: str, data: bytes, filename: str, *, max_unpacked_bytes: int
) -> int:
    """Unpack an archive (zip or tar, optionally compressed) holding one version — a
    manifest.toml and its artifact, at the top or under one directory — validate it, and move
    it into ``root/model/<next version>`` in one rename. Returns the version number.

    Nothing is written under a name the client chose: the version number is the server's,
    the unpacking happens in a hidden directory the repository scan skips.
    """
    if not model.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput("model names use letters, digits, '-' and '_'")
    model_dir = root / model
    staging = root / f".upload-{uuid.uuid4().hex}"
    payload = staging / "payload"
    payload.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            _extract_zip(data, payload, max_unpacked_bytes)
        else:
            try:
                _extract_tar(data, payload, max_unpacked_bytes)
            except tarfile.TarError as err:
                raise InvalidInput(f"'{filename}' is not a zip or tar archive") from err
        top = payload
        entries = list(payload.iterdir())
        if not (payload / MANIFEST_FILE).exists() and len(entries) == 1 and entries[0].is_dir():
            top = entries[0]
        if not (top / MANIFEST_FILE).exists():
            raise InvalidInput(f"the archive holds no {MANIFEST_FILE}")
        # Manifests are read from a directory named by its version number.
        candidate = top.rename(staging / "1")
        defaults = load_model_defaults(model_dir) if model_dir.exists() else ModelDefaults()
        try:
            load_version(model, candidate, defaults)
        except ManifestError as err:
            raise InvalidInput(f"the archive's manifest is invalid: {err.message}") from err
        model_dir.mkdir(exist_ok=True)
        number = max(version_dirs(model_dir), default=0) + 1
        # A rename within one file system is atomic: the scanner sees all of it or nothing.
        candidate.rename(model_dir / str(number))
        return number
    finally:
        shutil.rmtree(staging, ignore_errors=True)

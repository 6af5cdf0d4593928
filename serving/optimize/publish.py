"""Build a version out of sight, then publish it with one rename (as ``serving.archive`` does).

The staging directory is hidden (its name starts with a dot) at the top of the model root, so
the repository scan never sees a half-built version; whatever happens, it is removed.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serving.errors import InvalidInput
from serving.manifest import version_dirs

# Another writer (an upload, a second optimize) may take the next number first.
PUBLISH_ATTEMPTS = 20


def check_model_name(model: str) -> None:
    if not model or not model.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput("model names use letters, digits, '-' and '_'")


@contextmanager
def staging(root: Path, purpose: str) -> Iterator[Path]:
    """A fresh hidden directory under ``root``; a version is built in ``<it>/1``."""
    path = root / f".{purpose}-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(candidate: Path, model_dir: Path) -> int:
    """Move the complete version directory ``candidate`` to ``model_dir/<next number>``.

    A rename within one file system is atomic: the scanner sees all of the version or nothing.
    Returns the version number.
    """
    model_dir.mkdir(exist_ok=True)
    number = 0
    for _ in range(PUBLISH_ATTEMPTS):
        number = max([number, *version_dirs(model_dir)]) + 1
        target = model_dir / str(number)
        if target.exists():
            continue
        try:
            os.rename(candidate, target)
        except OSError as err:
            # Someone created the same number between our look and our rename.
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise
        return number
    raise RuntimeError(f"could not find a free version number under {model_dir.name}")

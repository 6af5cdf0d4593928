"""Uploading a version archive: validated, moved into place atomically, loaded, warmed."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

from flask.testing import FlaskClient

from tests import fake_repo
from tests.conftest import assert_error, client_as

MANIFEST = fake_repo.TAB_MANIFEST.format(max_batch_size=4)


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_of(files: dict[str, bytes], *, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("evil")
            info.type, info.linkname = tarfile.SYMTYPE, link
            archive.addfile(info)
    return buffer.getvalue()


def upload(client: FlaskClient, data: bytes, name: str = "v.zip"):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/models/tab/versions",
        data={"archive": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
    )


def test_an_uploaded_zip_becomes_the_next_ready_version(client: FlaskClient, repo: Path) -> None:
    response = upload(client, zip_of({"manifest.toml": MANIFEST.encode(), "model.bin": b"x"}))

    assert response.status_code == 201, response.get_json()
    assert (response.get_json()["version"], response.get_json()["state"]) == (4, "READY")
    assert (repo / "tab" / "4" / "manifest.toml").exists()
    assert not [p for p in repo.iterdir() if p.name.startswith(".upload-")]
    pinned = client.post("/api/models/tab/versions/4/predict", json={"instances": [[1, 2, 3]]})
    assert pinned.status_code == 200


def test_a_tarball_with_one_top_directory_is_accepted(client: FlaskClient) -> None:
    data = tar_of({"v/manifest.toml": MANIFEST.encode(), "v/model.bin": b"x"})
    assert upload(client, data, "v.tar.gz").status_code == 201


def test_path_traversal_links_and_garbage_are_refused_and_nothing_is_written(
    client: FlaskClient, repo: Path
) -> None:
    before = sorted(p.name for p in (repo / "tab").iterdir())
    escaping = zip_of({"../../evil.txt": b"x", "manifest.toml": MANIFEST.encode()})
    linked = tar_of({"manifest.toml": MANIFEST.encode(), "model.bin": b"x"}, link="/etc/passwd")

    assert_error(upload(client, escaping), 422, "invalid_input")
    assert_error(upload(client, linked, "v.tgz"), 422, "invalid_input")
    assert_error(upload(client, b"not an archive"), 422, "invalid_input")
    assert_error(upload(client, zip_of({"model.bin": b"x"})), 422, "invalid_input")
    bad_manifest = zip_of({"manifest.toml": b"runtime = 'fake'", "model.bin": b"x"})
    assert_error(upload(client, bad_manifest), 422, "invalid_input")

    assert sorted(p.name for p in (repo / "tab").iterdir()) == before
    assert not (repo.parent / "evil.txt").exists()
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]


def test_an_archive_unpacking_past_the_limit_is_413(
    make_app,
    repo: Path,  # type: ignore[no-untyped-def]
) -> None:

    client = client_as(make_app(MAX_ARCHIVE_BYTES=64 * 1024), "admin")
    bomb = zip_of({"manifest.toml": MANIFEST.encode(), "model.bin": b"\0" * (1024 * 1024)})
    assert len(bomb) < 64 * 1024
    assert_error(upload(client, bomb), 413, "payload_too_large")

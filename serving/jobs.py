"""Batch jobs, the part that needs no database: the input files a job accepts and the rows
of its results.

A job's input is a zip of images or a JSONL file of instances. Both are checked whole when
the job is submitted (so a malformed file is refused at once, not found half-way), and read
back item by item while the job runs, so memory holds one chunk, not the whole upload.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from serving.errors import InvalidInput, PayloadTooLarge, ServingError
from serving.pipeline import Item, Prediction

INPUT_KINDS = ("zip", "jsonl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
RESULT_FORMATS = ("jsonl", "csv")


@dataclass(frozen=True)
class JobLimits:
    max_items: int = 10_000
    # One image inside a zip, once unpacked; the same bound as a single upload.
    max_item_bytes: int = 10 * 1024 * 1024
    # Everything a zip unpacks to: a small archive may not expand into gigabytes.
    max_unpacked_bytes: int = 256 * 1024 * 1024
    max_line_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class JobItem:
    index: int
    name: str
    payload: Item
    # Set when the item could not even be read (a damaged zip member): it fails alone.
    error: str | None = None


def _reject_constant(value: str) -> None:
    raise ValueError(f"{value} is not a number JSON allows")


class JobInput:
    """A job's uploaded file, validated; ``items(start, stop)`` reads a slice of it."""

    def __init__(self, kind: str, data: bytes, limits: JobLimits | None = None) -> None:
        if kind not in INPUT_KINDS:
            raise InvalidInput(f"a job's input must be one of {list(INPUT_KINDS)}")
        self.kind = kind
        self._data = data
        self._limits = limits or JobLimits()
        self.names = self._zip_names() if kind == "zip" else self._jsonl_lines()
        if not self.names:
            raise InvalidInput(
                "the file holds no item" + (" (PNG, JPEG or WebP files)" if kind == "zip" else "")
            )
        if len(self.names) > self._limits.max_items:
            raise PayloadTooLarge(
                f"{len(self.names)} items in one job; at most {self._limits.max_items}",
                details={"items": len(self.names), "max_items": self._limits.max_items},
            )

    @classmethod
    def kind_of(cls, filename: str, content_type: str | None) -> str:
        """``zip`` or ``jsonl`` from the upload's name or type; raises InvalidInput."""
        lowered = filename.lower()
        if lowered.endswith(".zip") or content_type in ("application/zip", "application/x-zip"):
            return "zip"
        if lowered.endswith((".jsonl", ".ndjson")) or content_type in (
            "application/jsonl",
            "application/x-ndjson",
        ):
            return "jsonl"
        raise InvalidInput("upload a .zip of images or a .jsonl file of instances")

    @property
    def total(self) -> int:
        return len(self.names)

    # -- zip --------------------------------------------------------------------------------

    def _zip(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(io.BytesIO(self._data))
        except (zipfile.BadZipFile, OSError) as err:
            raise InvalidInput("the file is not a readable zip archive") from err

    def _zip_members(self, archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
        members = []
        for info in archive.infolist():
            base = posixpath.basename(info.filename)
            if info.is_dir() or base.startswith(".") or info.filename.startswith("__MACOSX/"):
                continue
            if base.lower().endswith(IMAGE_SUFFIXES):
                members.append(info)
        return members

    def _declared_entries(self) -> int | None:
        """The entry count in the archive's end record, read before zipfile builds an object
        per entry (a small upload of empty entries would otherwise cost a lot of memory)."""
        tail = self._data[-(22 + 65535) :]
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + 12 > len(tail):
            return None
        return int.from_bytes(tail[at + 10 : at + 12], "little")

    def _zip_names(self) -> list[str]:
        entries = self._declared_entries()
        # Non-image entries are allowed (folders, notes), within reason; 0xFFFF means ZIP64.
        if entries is not None and entries > 2 * self._limits.max_items:
            raise PayloadTooLarge(
                f"the archive holds {entries} entries; at most {self._limits.max_items} images",
                details={"max_items": self._limits.max_items},
            )
        with self._zip() as archive:
            members = self._zip_members(archive)
            unpacked = 0
            for info in members:
                if info.file_size > self._limits.max_item_bytes:
                    raise PayloadTooLarge(
                        f"'{info.filename}' unpacks to {info.file_size} bytes; at most "
                        f"{self._limits.max_item_bytes} per image"
                    )
                unpacked += info.file_size
            if unpacked > self._limits.max_unpacked_bytes:
                raise PayloadTooLarge(
                    f"the archive unpacks to {unpacked} bytes; at most "
                    f"{self._limits.max_unpacked_bytes}"
                )
            # Only a label for the results: never used as a path.
            return [info.filename for info in members]

    def _member(self, archive: zipfile.ZipFile, index: int, info: zipfile.ZipInfo) -> JobItem:
        try:
            # A member cannot deliver more than it declared (checked at submission).
            data = archive.open(info).read(self._limits.max_item_bytes + 1)
        except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, OSError) as err:
            # Damaged, encrypted or oddly compressed: that one item fails, the job goes on.
            return JobItem(index, info.filename, b"", error=f"cannot read this file: {err}")
        return JobItem(index, info.filename, data)

    # -- jsonl ------------------------------------------------------------------------------

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        """Non-blank lines with their numbers, found one at a time (no list of all lines)."""
        data, start, number = self._data, 0, 0
        while start < len(data):
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end
            number += 1
            line = data[start:end].rstrip(b"\r")
            if line.strip():
                yield number, line
            start = end + 1

    def _parse(self, number: int, line: bytes) -> Any:
        if len(line) > self._limits.max_line_bytes:
            raise PayloadTooLarge(f"line {number} is longer than {self._limits.max_line_bytes}")
        try:
            return json.loads(line, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as err:
            raise InvalidInput(
                f"line {number} is not valid JSON: {err}", details={"line": number}
            ) from err

    def _jsonl_lines(self) -> list[str]:
        names: list[str] = []
        for number, line in self._lines():
            if len(names) >= self._limits.max_items:
                # Stop at once: counting on would parse a file of any length first.
                raise PayloadTooLarge(
                    f"more than {self._limits.max_items} items in one job",
                    details={"max_items": self._limits.max_items},
                )
            value = self._parse(number, line)
            if not isinstance(value, (dict, list)):
                raise InvalidInput(
                    f"line {number} must be an instance (an object or a list)",
                    details={"line": number},
                )
            names.append(f"line {number}")
        return names

    # -- reading back -----------------------------------------------------------------------

    def items(self, start: int, stop: int) -> list[JobItem]:
        """Items ``start`` to ``stop`` (exclusive), in the order of the file."""
        stop = min(stop, self.total)
        if start >= stop:
            return []
        if self.kind == "zip":
            with self._zip() as archive:
                members = self._zip_members(archive)[start:stop]
                return [self._member(archive, start + i, info) for i, info in enumerate(members)]
        selected = []
        for index, (number, line) in enumerate(self._lines()):
            if index >= stop:
                break
            if index >= start:
                selected.append(JobItem(index, f"line {number}", self._parse(number, line)))
        return selected


@dataclass(frozen=True)
class ResultRow:
    """One item's outcome: a prediction or the error that stopped it."""

    index: int
    name: str
    version: int
    prediction: Prediction | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"index": self.index, "name": self.name, "version": self.version}
        if self.prediction is not None:
            row.update(self.prediction.to_dict())
        else:
            row["error"] = self.error
        return row


def result_rows(
    items: Iterable[JobItem], version: int, answers: Iterable[Prediction | ServingError]
) -> list[ResultRow]:
    rows = []
    for item, answer in zip(items, answers, strict=True):
        if isinstance(answer, Prediction):
            rows.append(ResultRow(item.index, item.name, version, prediction=answer))
        else:
            rows.append(ResultRow(item.index, item.name, version, error=answer.message))
    return rows


CSV_COLUMNS = ("index", "name", "version", "label", "score", "top_k", "error")


def csv_header() -> str:
    return _csv_line(CSV_COLUMNS)


def csv_line(row: dict[str, Any]) -> str:
    """A result row as CSV: ``top_k`` as ``label:score`` pairs separated by spaces."""
    top_k = " ".join(f"{t['label']}:{t['score']}" for t in row.get("top_k", []))
    return _csv_line(
        (
            row["index"],
            row["name"],
            row["version"],
            row.get("label", ""),
            row.get("score", ""),
            top_k,
            row.get("error") or "",
        )
    )


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    # Spreadsheets run a cell starting with = + - @ (or a tab or CR before one) as a formula;
    # file names come from users.
    safe = [f"'{v}" if isinstance(v, str) and v[:1] in _FORMULA_STARTS else v for v in values]
    csv.writer(buffer, lineterminator="\n").writerow(safe)
    return buffer.getvalue()

"""Batch job inputs: what a zip or JSONL upload yields, and what is refused before a job runs."""

from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image

from serving.errors import InvalidInput, PayloadTooLarge
from serving.jobs import JobInput, JobLimits, csv_header, csv_line
from tests.conftest import png_bytes


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_yields_its_images_in_order_and_skips_everything_else() -> None:
    image = png_bytes(Image.new("L", (4, 4)))
    data = zip_of(
        {
            "b/one.png": image,
            "notes.txt": b"ignored",
            "__MACOSX/b/._one.png": b"junk",
            ".hidden.png": image,
            "two.JPG": image,
        }
    )
    job_input = JobInput("zip", data)
    assert job_input.names == ["b/one.png", "two.JPG"]
    items = job_input.items(1, 5)
    assert [(i.index, i.name, i.payload) for i in items] == [(1, "two.JPG", image)]


def test_a_zip_bomb_is_refused_from_its_declared_sizes() -> None:
    data = zip_of({f"{i}.png": bytes(1000) for i in range(5)})
    with pytest.raises(PayloadTooLarge, match="unpacks to 5000 bytes"):
        JobInput("zip", data, JobLimits(max_unpacked_bytes=4000))
    with pytest.raises(PayloadTooLarge, match="per image"):
        JobInput("zip", data, JobLimits(max_item_bytes=999))


def test_too_many_items_and_unreadable_files_are_refused() -> None:
    with pytest.raises(PayloadTooLarge, match="more than 2 items in one job"):
        JobInput("jsonl", b'{"a": 1}\n{"a": 2}\n{"a": 3}\n', JobLimits(max_items=2))
    with pytest.raises(InvalidInput, match="not a readable zip"):
        JobInput("zip", b"PK not really")
    with pytest.raises(InvalidInput, match="holds no item"):
        JobInput("zip", zip_of({"readme.md": b"x"}))
    with pytest.raises(InvalidInput, match="line 2 is not valid JSON"):
        JobInput("jsonl", b'{"a": 1}\n{"a": NaN}\n')
    with pytest.raises(InvalidInput, match="line 1 must be an instance"):
        JobInput("jsonl", b"42\n")


def test_jsonl_lines_are_named_by_line_number_and_blank_lines_skipped() -> None:
    job_input = JobInput("jsonl", b'{"a": 1}\n\n[1, 2, 3]\n{"b64": "AAAA"}\n')
    assert job_input.total == 3
    items = job_input.items(0, 10)
    assert [(i.index, i.name) for i in items] == [(0, "line 1"), (1, "line 3"), (2, "line 4")]
    assert items[1].payload == [1, 2, 3]


def test_the_kind_comes_from_the_name_or_the_type() -> None:
    assert JobInput.kind_of("photos.ZIP", None) == "zip"
    assert JobInput.kind_of("upload", "application/x-ndjson") == "jsonl"
    with pytest.raises(InvalidInput, match=r"upload a \.zip"):
        JobInput.kind_of("data.csv", "text/csv")


def test_csv_rows_cannot_smuggle_a_spreadsheet_formula() -> None:
    row = {"index": 0, "name": "=HYPERLINK(evil)", "version": 1, "error": "bad"}
    assert csv_line(row) == "0,'=HYPERLINK(evil),1,,,,bad\n"
    assert csv_header().startswith("index,name,version,label,score")


def test_a_zip_of_many_entries_is_refused_from_its_end_record() -> None:
    data = zip_of({f"{i}.txt": b"" for i in range(50)})
    with pytest.raises(PayloadTooLarge, match="holds 50 entries"):
        JobInput("zip", data, JobLimits(max_items=10))


def test_a_damaged_member_fails_alone() -> None:
    image = png_bytes(Image.new("L", (4, 4)))
    data = bytearray(zip_of({"good.png": image, "bad.png": image}))
    # Flip a byte of the second member's compressed data: its CRC check fails on reading.
    second = data.find(b"bad.png") + len("bad.png")
    data[second + 5] ^= 0xFF
    items = JobInput("zip", bytes(data)).items(0, 2)
    assert items[0].error is None and items[0].payload == image
    assert items[1].error is not None and "cannot read" in items[1].error


def test_csv_guards_tabs_and_carriage_returns_too() -> None:
    assert csv_line({"index": 1, "name": "\t=1+1", "version": 1}).startswith("1,'")

"""The part-size policy (docs/gc-api.md §1: 10 000 parts of 5 MiB … 5 GiB) and the multipart checksum."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gcbulk.checksums import composite_checksum
from gcbulk.engine.plan.parts import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    ChecksumStopped,
    FileTooLarge,
    adjust_part_size,
    multipart_checksum,
    part_count,
    part_ranges,
)

MiB = 1024**2
GiB = 1024**3


@given(preferred=st.integers(min_value=1, max_value=8 * GiB), file_size=st.integers(0, MAX_OBJECT_SIZE))
def test_adjusted_part_size_fits_the_file_in_allowed_parts(preferred: int, file_size: int) -> None:
    size = adjust_part_size(preferred, file_size)
    assert MIN_PART_SIZE <= size <= MAX_PART_SIZE
    assert part_count(file_size, size) <= MAX_PARTS
    clamped = min(max(preferred, MIN_PART_SIZE), MAX_PART_SIZE)
    assert size >= clamped
    if size > clamped:  # grown only as far as needed: half of it would not fit
        assert size == MAX_PART_SIZE or part_count(file_size, size // 2) > MAX_PARTS


def test_part_size_grows_by_doubling_for_big_files() -> None:
    assert adjust_part_size(32 * MiB, 100 * GiB) == 32 * MiB
    assert adjust_part_size(8 * MiB, 100 * GiB) == 16 * MiB
    assert adjust_part_size(1, 10 * MiB) == MIN_PART_SIZE


def test_file_over_the_object_limit_is_refused() -> None:
    with pytest.raises(FileTooLarge, match="5 TiB"):
        adjust_part_size(32 * MiB, MAX_OBJECT_SIZE + 1)


@given(file_size=st.integers(0, 10**9), part_size=st.integers(MIN_PART_SIZE, 64 * MiB))
def test_part_ranges_cover_the_file_exactly_once(file_size: int, part_size: int) -> None:
    ranges = list(part_ranges(file_size, part_size))
    assert [number for number, _, _ in ranges] == list(range(1, len(ranges) + 1))
    assert sum(length for _, _, length in ranges) == file_size
    assert all(offset == (number - 1) * part_size for number, offset, _ in ranges)
    assert all(length == part_size for _, _, length in ranges[:-1])


@pytest.mark.parametrize("size", [0, 1, 5 * MiB, 5 * MiB + 1, 11 * MiB])
def test_multipart_checksum_matches_what_the_ledger_computes_from_part_md5s(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    part_md5s = [
        hashlib.md5(data[offset : offset + length]).hexdigest() for _, offset, length in part_ranges(size, 5 * MiB)
    ]
    assert multipart_checksum(path, 5 * MiB) == composite_checksum(part_md5s)
    assert multipart_checksum(path, 5 * MiB).endswith(f"-{part_count(size, 5 * MiB)}")


def test_multipart_checksum_stops_once_asked(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 6 * MiB)
    stop = threading.Event()
    stop.set()
    with pytest.raises(ChecksumStopped, match="big.bin: stopped before its end"):
        multipart_checksum(path, 5 * MiB, stop)
    assert multipart_checksum(path, 5 * MiB, threading.Event()) == multipart_checksum(path, 5 * MiB)

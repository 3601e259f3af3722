"""Pure part-size policy for S3 multipart uploads (docs/gc-api.md §1), shared by the planner and the transfer engine."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from threading import Event

from gcbulk.checksums import composite_checksum

MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

# docs/gc-api.md §1, "S3 multipart rules in force".
MIN_PART_SIZE = 5 * MiB  # every part but the last
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * TiB


class FileTooLarge(ValueError):
    """No allowed part size fits the file in 10 000 parts, or it exceeds S3's 5 TiB object limit."""


def adjust_part_size(preferred: int, file_size: int) -> int:
    """The part size to use for a file: ``preferred`` clamped to [5 MiB, 5 GiB], doubled until ≤ 10 000 parts.

    Doubling (as boto/s3transfer's ``ChunksizeAdjuster`` does) keeps part sizes on a few round values, so memory
    per part in flight stays predictable. Raises :class:`FileTooLarge` for files S3 cannot take.
    """
    if file_size > MAX_OBJECT_SIZE:
        raise FileTooLarge(f"{file_size} bytes is over S3's object limit of 5 TiB")
    size = min(max(preferred, MIN_PART_SIZE), MAX_PART_SIZE)
    while part_count(file_size, size) > MAX_PARTS:
        size = min(size * 2, MAX_PART_SIZE)
        if size == MAX_PART_SIZE and part_count(file_size, size) > MAX_PARTS:
            raise FileTooLarge(f"{file_size} bytes does not fit in {MAX_PARTS} parts of 5 GiB")
    return size


def part_count(file_size: int, part_size: int) -> int:
    """Parts needed for a file; an empty file still takes one (empty) part."""
    return max(1, -(-file_size // part_size))


def part_ranges(file_size: int, part_size: int) -> Iterator[tuple[int, int, int]]:
    """``(part number, offset, length)`` for each part, numbers from 1 (docs/gc-api.md §1)."""
    for index in range(part_count(file_size, part_size)):
        offset = index * part_size
        yield index + 1, offset, min(part_size, file_size - offset)


class ChecksumStopped(Exception):
    """``multipart_checksum`` stopped before the end of the file: its ``stop`` was set."""


def multipart_checksum(path: Path, part_size: int, stop: Event | None = None) -> str:
    """The S3-style multipart checksum of a file read with ``part_size`` parts (what the ledger records on completion).

    Reads the file once, part by part, so memory stays at one part (or 8 MiB, whichever is smaller) per call.
    ``stop``, checked before each read, raises :class:`ChecksumStopped` once set: a file hashed on another thread
    cannot be interrupted otherwise, and a big one takes seconds per GiB.
    """
    digests: list[str] = []
    with open(path, "rb") as handle:
        while True:
            part = hashlib.md5(usedforsecurity=False)
            remaining = part_size
            while remaining:
                if stop is not None and stop.is_set():
                    raise ChecksumStopped(f"{path}: stopped before its end")
                block = handle.read(min(remaining, 8 * MiB))
                if not block:
                    break
                part.update(block)
                remaining -= len(block)
            if remaining == part_size and digests:
                break
            digests.append(part.hexdigest())
            if remaining:
                break
    return composite_checksum(digests)

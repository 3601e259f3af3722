"""Presigning in batches, part arithmetic and the ETag check (no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gcbulk.engine.gc.errors import SourceFileChanged
from gcbulk.engine.gc.uploads_api import UploadRef
from gcbulk.engine.upload.s3_parts import (
    PartSpec,
    PresignedUrls,
    etag_matches_md5,
    part_specs,
    read_part,
)

MIB = 1024 * 1024


class RecordingPresigner:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def __call__(self, upload: UploadRef, numbers: list[int]) -> dict[int, str]:
        self.calls.append(list(numbers))
        return {n: f"https://s3.test/{upload.pk}?partNumber={n}&sig={len(self.calls)}" for n in numbers}


async def test_urls_are_presigned_in_batches_just_ahead_of_the_parts() -> None:
    presign = RecordingPresigner()
    urls = PresignedUrls(presign, UploadRef("u1", "s1"), [1, 2, 3, 4, 5, 6, 7], batch_size=3)
    got = [await urls.url_for(n) for n in range(1, 8)]
    assert presign.calls == [[1, 2, 3], [4, 5, 6], [7]]
    assert got[0].endswith("partNumber=1&sig=1") and got[6].endswith("partNumber=7&sig=3")


async def test_a_resumed_upload_presigns_only_the_missing_parts() -> None:
    presign = RecordingPresigner()
    urls = PresignedUrls(presign, UploadRef("u1", "s1"), [2, 5, 9], batch_size=10)
    await urls.url_for(2)
    await urls.url_for(5)
    await urls.url_for(9)
    assert presign.calls == [[2, 5, 9]]


async def test_a_refused_url_is_signed_again_alone() -> None:
    presign = RecordingPresigner()
    urls = PresignedUrls(presign, UploadRef("u1", "s1"), [1, 2], batch_size=10)
    first = await urls.url_for(1)
    fresh = await urls.resign(1)
    assert presign.calls == [[1, 2], [1]] and fresh != first


def test_parts_cover_the_file_with_a_short_last_part() -> None:
    assert part_specs(11 * MIB, 5 * MIB) == [
        PartSpec(1, 0, 5 * MIB),
        PartSpec(2, 5 * MIB, 5 * MIB),
        PartSpec(3, 10 * MIB, MIB),
    ]
    assert part_specs(0, 5 * MIB) == [PartSpec(1, 0, 0)]


def test_a_part_is_read_with_its_md5(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcdefghij")
    data, md5 = read_part(path, PartSpec(2, 5, 5))
    assert data == b"fghij" and md5 == hashlib.md5(b"fghij").hexdigest()


def test_a_file_shorter_than_planned_is_reported_as_changed(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    with pytest.raises(SourceFileChanged, match="changed since it was planned"):
        read_part(path, PartSpec(1, 0, 10))


def test_the_etag_must_be_the_md5_unless_it_is_not_an_md5() -> None:
    md5 = hashlib.md5(b"x").hexdigest()
    assert etag_matches_md5(f'"{md5}"', md5)
    assert not etag_matches_md5(f'"{"0" * 32}"', md5)
    assert etag_matches_md5('"kms-encrypted-etag-not-an-md5"', md5)

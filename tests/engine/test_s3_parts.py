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
    md5_of_etag,
    part_md5,
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


def test_a_part_is_read_as_its_bytes_and_hashed_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcdefghij")
    assert read_part(path, PartSpec(2, 5, 5)) == b"fghij"
    assert part_md5(path, PartSpec(2, 5, 5)) == hashlib.md5(b"fghij").hexdigest()


def test_a_part_larger_than_a_hash_block_hashes_as_a_whole(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * (40 * 1024 + 1)  # 10 MiB and 256 bytes: more than one 8 MiB block
    path.write_bytes(data)
    assert part_md5(path, PartSpec(1, 100, len(data) - 100)) == hashlib.md5(data[100:]).hexdigest()


@pytest.mark.parametrize("read", [read_part, part_md5])
def test_a_file_shorter_than_planned_is_reported_as_changed(tmp_path: Path, read: object) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    with pytest.raises(SourceFileChanged, match="changed since it was planned"):
        read(path, PartSpec(1, 0, 10))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("etag", "md5"),
    [
        ('"0cc175b9c0f1b6a831c399e269772661"', "0cc175b9c0f1b6a831c399e269772661"),  # S3's quoted MD5
        ("0CC175B9C0F1B6A831C399E269772661", "0cc175b9c0f1b6a831c399e269772661"),  # unquoted, upper case
        ('"kms-encrypted-etag-not-an-md5"', None),  # nothing to compare: the file is read instead
        ('"0cc175b9c0f1b6a831c399e269772661-2"', None),  # a multipart object's ETag, not a part's
    ],
)
def test_the_md5_a_part_etag_carries(etag: str, md5: str | None) -> None:
    assert md5_of_etag(etag) == md5

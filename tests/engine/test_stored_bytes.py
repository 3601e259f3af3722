"""What S3 holds against what was planned, from the ETags it answered (``engine/upload/stored_bytes.py``): one table
of situations, a real file on disk, and the plan's checksum as ``gcbulk plan`` records it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gcbulk.engine.gc.errors import SourceFileChanged
from gcbulk.engine.plan.parts import MiB, multipart_checksum
from gcbulk.engine.upload.stored_bytes import parts_not_as_planned
from gcbulk.state.records import FileWork, PartRow, UploadRow

PART = 5 * MiB
CONTENT = bytes(range(256)) * (11 * MiB // 256)  # 11 MiB: parts of 5, 5 and 1 MiB


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _file(path: Path, *, checksum: str | None, part_size: int | None) -> FileWork:
    return FileWork(
        id=1,
        item_id=1,
        relative_path="case/ct.mha",
        path=path,
        name="ct.mha",
        size=len(CONTENT),
        mtime_ns=0,
        checksum=checksum,
        upload=None,
        checksum_part_size=part_size,
    )


def _upload(etags: list[str | None]) -> UploadRow:
    parts = {
        number: PartRow(upload_id=1, number=number, state="sent", size=0, etag=f'"{md5}"', md5=md5)
        for number, md5 in enumerate(etags, start=1)
    }
    return UploadRow(
        id=1,
        file_id=1,
        state="initialized",
        filename="ct.mha",
        pk="u1",
        s3_upload_id="s1",
        file_size=len(CONTENT),
        part_size=PART,
        part_count=len(etags),
        intent_at=None,
        created_at=None,
        completed_at=None,
        attempts=0,
        last_error=None,
        parts=parts,
    )


AS_SENT = [_md5(CONTENT[:PART]), _md5(CONTENT[PART : 2 * PART]), _md5(CONTENT[2 * PART :])]
SPOILED_2 = [AS_SENT[0], "0" * 32, AS_SENT[2]]
NO_MD5 = [AS_SENT[0], None, AS_SENT[2]]  # an ETag that is not an MD5: the part's md5 is not known


@pytest.mark.parametrize(
    ("plan_part_size", "etags", "wrong"),
    [
        (PART, AS_SENT, []),  # the ETags make the plan's checksum: S3 holds the planned bytes
        (PART, SPOILED_2, [2]),  # the file is as planned, S3 stored other bytes for part 2
        (PART, NO_MD5, []),  # nothing to compare for part 2: the file, read, is still as planned
        (8 * MiB, AS_SENT, []),  # engine.part_size changed since the plan: the file is read at the plan's size
        (8 * MiB, SPOILED_2, [2]),
        (None, SPOILED_2, [2]),  # no plan checksum (an older plan): the parts are compared with the file
    ],
)
async def test_which_parts_s3_holds_other_bytes_for(
    tmp_path: Path, plan_part_size: int | None, etags: list[str | None], wrong: list[int]
) -> None:
    path = tmp_path / "ct.mha"
    path.write_bytes(CONTENT)
    checksum = multipart_checksum(path, plan_part_size) if plan_part_size else None
    file = _file(path, checksum=checksum, part_size=plan_part_size)
    assert await parts_not_as_planned(file, _upload(etags), staged_copy=False) == wrong


async def test_a_file_changed_since_its_plan_is_refused_when_s3_does_not_hold_the_planned_bytes(tmp_path: Path) -> None:
    path = tmp_path / "ct.mha"
    path.write_bytes(CONTENT)
    file = _file(path, checksum=multipart_checksum(path, PART), part_size=PART)
    path.write_bytes(CONTENT[:-1] + b"\x00")  # one byte changed, same size
    spoiled_last = [AS_SENT[0], AS_SENT[1], _md5(CONTENT[2 * PART : -1] + b"\x00")]  # S3 got the changed bytes
    with pytest.raises(SourceFileChanged, match="its bytes are not the bytes planned.*run 'gcbulk plan' again"):
        await parts_not_as_planned(file, _upload(spoiled_last), staged_copy=False)
    # Parts S3 stored before the change are the planned bytes: what it holds is what was planned, nothing to refuse.
    assert await parts_not_as_planned(file, _upload(AS_SENT), staged_copy=False) == []

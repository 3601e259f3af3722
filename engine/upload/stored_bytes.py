"""Are the bytes S3 holds for an upload the bytes planned? Answered from S3's own ETags, reading the file only when
they do not say yes (docs/gc-api.md §1: a part's ETag is the MD5 of the bytes S3 stored).

The plan records each file's S3-style multipart checksum at the part size the upload uses (README "The bytes sent are
the bytes planned"); the ETags of the parts sent, composed, are that same checksum when S3 stored exactly the planned
bytes. So nothing is hashed while the parts are sent — a second MD5 of every byte (1.4 CPU s per GiB) would only
repeat what S3 computed — and the check covers what was stored, not only what left this process.
"""

from __future__ import annotations

import anyio

from gcbulk.checksums import composite_checksum
from gcbulk.engine.gc.errors import SourceFileChanged
from gcbulk.engine.plan.parts import multipart_checksum
from gcbulk.engine.upload.s3_parts import part_md5, part_specs
from gcbulk.state.records import FileWork, UploadRow


async def parts_not_as_planned(file: FileWork, upload: UploadRow, *, staged_copy: bool) -> list[int]:
    """The numbers of the parts S3 holds other bytes for than the file's (send them again); [] when S3 holds the file.

    When the parts' ETags compose into the plan's checksum, nothing is read. Otherwise — or when the plan recorded no
    multipart checksum (an older plan; a staged DICOM copy, which has its own SHA-256) — the file is read once, in a
    worker thread: raises SourceFileChanged when it is no longer what was planned (an edit that kept its size and
    mtime), else compares each part's MD5 with its ETag's.
    """
    planned = None if staged_copy else file.checksum
    planned_part = file.checksum_part_size if planned is not None else None
    stored = [part.md5 for _, part in sorted(upload.parts.items())]
    if planned_part == upload.part_size and all(stored):
        if composite_checksum([md5 for md5 in stored if md5]) == planned:
            return []
    # The ETags do not make the planned checksum: the file changed, or S3 holds other bytes for some part, or
    # engine.part_size changed since the plan, or an ETag is not an MD5 (an object store with other ETags).
    specs = part_specs(upload.file_size, upload.part_size)
    md5s = [await anyio.to_thread.run_sync(part_md5, file.path, spec) for spec in specs]
    if planned is not None and planned_part is not None:
        now = (
            composite_checksum(md5s)
            if planned_part == upload.part_size
            else await anyio.to_thread.run_sync(multipart_checksum, file.path, planned_part)
        )
        if now != planned:
            raise SourceFileChanged(
                f"{file.path}: its bytes are not the bytes planned (checksum {now}, planned {planned}), "
                "though its size and mtime are; the file changed since it was planned — run 'gcbulk plan' again"
            )
    return [
        spec.number
        for spec, md5 in zip(specs, md5s, strict=True)
        if (held := upload.parts.get(spec.number)) is not None and held.md5 is not None and held.md5 != md5
    ]

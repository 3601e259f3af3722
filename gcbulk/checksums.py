"""Checksums both the planner (what a file's upload will look like) and the ledger (what was sent) compute."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def composite_checksum(part_md5_hexes: Sequence[str]) -> str:
    """The S3 multipart checksum of a file: MD5 of the concatenated part MD5 digests, then ``-<number of parts>``."""
    digest = hashlib.md5(b"".join(bytes.fromhex(h) for h in part_md5_hexes), usedforsecurity=False)
    return f"{digest.hexdigest()}-{len(part_md5_hexes)}"

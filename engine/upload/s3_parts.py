"""Presigned part PUTs to the object store (docs/gc-api.md §1).

Each part is read in a worker thread; the PUT goes to the presigned URL with no Authorization header, and S3's quoted
ETag comes back verbatim. Nothing is hashed while parts are sent: S3's ETag of a part *is* the MD5 of the bytes it
stored (non-KMS objects), and those MD5s, composed, are checked against the plan's checksum before the upload is
completed (``engine/upload/file_upload.py``) — an end-to-end check of what S3 holds, which hashing our own copy of the
bytes (1.4 CPU s per GiB) would only repeat. Progress is counted where the bytes flow — in the request payload — and
a failed attempt gives back what it had counted (a negative delta, as s3transfer does), so totals stay true.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from gcbulk.engine.gc.deadlines import DeadlinePassed, part_deadline, part_timeout, voiced
from gcbulk.engine.gc.errors import (
    MultipartUploadVanished,
    PresignedUrlExpired,
    S3Error,
    SourceFileChanged,
    is_network_error,
    transport_error,
)
from gcbulk.engine.gc.retry import RetryObserver, RetryPolicy, call_with_retries
from gcbulk.engine.gc.uploads_api import UploadRef
from gcbulk.engine.plan.parts import part_ranges
from gcbulk.engine.upload.crashpoints import crash_point

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]

# Writes go to the socket in slices so that progress moves smoothly and the event loop is not held by one large write.
_WRITE_SLICE = 1024 * 1024
# docs/gc-api.md §1: presigned URLs live 3600 s (boto3's default). Ask again well before, rather than meet a 403.
URL_FRESH_SECONDS = 3000.0
# Three 403s in a row on freshly signed URLs is not expiry but a refusal; stop re-signing then.
MAX_RESIGNS_PER_PART = 3
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')
# Blocks a part is hashed in when it must be (resume; a mismatch): memory per hash stays this, not a part.
_HASH_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class PartSpec:
    number: int  # 1-based (docs/gc-api.md §1)
    offset: int
    size: int


def part_specs(file_size: int, part_size: int) -> list[PartSpec]:
    """The parts of a file (the policy is ``engine/plan/parts.py``'s, shared with the planner)."""
    return [PartSpec(number, offset, size) for number, offset, size in part_ranges(file_size, part_size)]


def read_part(path: Path, part: PartSpec) -> bytes:
    """The part's bytes. Blocking: run it in a worker thread."""
    with path.open("rb") as handle:
        handle.seek(part.offset)
        data = handle.read(part.size)
    if len(data) != part.size:
        raise _shorter(path, part)
    return data


def part_md5(path: Path, part: PartSpec) -> str:
    """The MD5 hex digest of the part as the file holds it now, read in blocks (memory stays at one block): to compare
    with the ETag S3 shows for it. Blocking: run it in a worker thread."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        handle.seek(part.offset)
        remaining = part.size
        while remaining:
            block = handle.read(min(remaining, _HASH_BLOCK))
            if not block:
                raise _shorter(path, part)
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def _shorter(path: Path, part: PartSpec) -> SourceFileChanged:
    return SourceFileChanged(
        f"{path}: part {part.number} should have {part.size} bytes at offset {part.offset} but the file has "
        "fewer; the file changed since it was planned — run 'gcbulk plan' again"
    )


def md5_of_etag(etag: str) -> str | None:
    """The MD5 hex digest (lower case) a part's ETag carries — S3 answers a part PUT with the MD5 of the bytes it
    stored (docs/gc-api.md §1) — or None when the ETag is not an MD5's shape (an object store that says otherwise)."""
    match = _MD5_ETAG.match(etag.strip())
    return None if match is None else match.group(1).lower()


class PartPayload(Payload):
    """The part's bytes as a request body that reports each slice as it is written to the connection."""

    def __init__(self, data: bytes, on_sent: ProgressCallback) -> None:
        super().__init__(data, content_type="application/octet-stream")
        self._size = len(data)
        self._on_sent = on_sent

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        data: bytes = self._value
        return data.decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        view = memoryview(self._value)[: content_length if content_length is not None else len(self._value)]
        for start in range(0, len(view), _WRITE_SLICE):
            chunk = view[start : start + _WRITE_SLICE]
            await writer.write(chunk)
            self._on_sent(len(chunk))


async def put_part(session: aiohttp.ClientSession, url: str, data: bytes, *, progress: ProgressCallback) -> str:
    """One PUT of one part. Returns S3's ETag exactly as sent (quotes included)."""
    sent = 0
    halfway = len(data) // 2

    def on_sent(count: int) -> None:
        nonlocal sent
        crossed = sent <= halfway < sent + count
        sent += count
        progress(count)
        if crossed:
            crash_point("mid-part")

    # The signed query is not a secret like the token, but it grants writes for an hour: keep it out of messages.
    shown_url = url.split("?", 1)[0]
    try:
        # An overall deadline that grows with the part (engine/gc/deadlines.py): a stalled S3 is given up on, retried.
        with voiced(f"PUT of {len(data)} bytes to {shown_url}", part_deadline(len(data))):
            async with session.put(url, data=PartPayload(data, on_sent), timeout=part_timeout(len(data))) as response:
                body = await response.read()
                status, headers, etag = response.status, dict(response.headers), response.headers.get("ETag")
    except BaseException as exc:  # cancellation too: the bytes it counted were not stored
        progress(-sent)
        if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ServerTimeoutError):
            exc = DeadlinePassed(f"PUT {shown_url}", part_deadline(len(data)))
        if is_network_error(exc):
            raise transport_error("PUT", shown_url, exc) from None
        raise
    if status >= 300:
        progress(-sent)
        text = body.decode(errors="replace")
        if status == 403:
            raise PresignedUrlExpired("PUT", shown_url, status, text, headers)
        if status == 404:
            raise MultipartUploadVanished(f"PUT {shown_url} answered 404: the multipart upload is gone ({text})")
        raise S3Error("PUT", shown_url, status, text, headers)
    if not etag:
        progress(-sent)
        raise S3Error("PUT", shown_url, status, "the answer has no ETag header", headers)
    return etag


class PresignedUrls:
    """Presigned URLs for one upload's parts, asked for in batches just ahead of the PUTs and renewed before they
    expire (docs/gc-api.md §1: any subset of part numbers can be presigned at any time)."""

    def __init__(
        self,
        presign: Callable[[UploadRef, Sequence[int]], Awaitable[dict[int, str]]],
        upload: UploadRef,
        part_numbers: Sequence[int],
        *,
        batch_size: int,
    ) -> None:
        self._presign = presign
        self._upload = upload
        self._pending = sorted(part_numbers)
        self._batch_size = max(1, batch_size)
        self._urls: dict[int, tuple[str, float]] = {}
        self._lock = anyio.Lock()

    def _fresh(self, number: int) -> bool:
        cached = self._urls.get(number)
        return cached is not None and time.monotonic() - cached[1] < URL_FRESH_SECONDS

    async def url_for(self, number: int) -> str:
        """The URL for ``number``; on a miss, presigns it with the next pending parts that lack a fresh URL."""
        async with self._lock:
            index = bisect.bisect_left(self._pending, number)
            if index < len(self._pending) and self._pending[index] == number:
                del self._pending[index]
            if self._fresh(number):
                return self._urls.pop(number)[0]
            later = [n for n in self._pending[index:] if not self._fresh(n)][: self._batch_size - 1]
            urls = await self._presign(self._upload, [number, *later])
            now = time.monotonic()
            self._urls.update({n: (u, now) for n, u in urls.items() if n != number})
            return urls[number]

    async def resign(self, number: int) -> str:
        """A fresh URL for one part, after S3 refused the old one."""
        self._urls.pop(number, None)
        return (await self._presign(self._upload, [number]))[number]


async def upload_part(
    session: aiohttp.ClientSession,
    urls: PresignedUrls,
    part: PartSpec,
    data: bytes,
    *,
    policy: RetryPolicy,
    progress: ProgressCallback,
    on_retry: RetryObserver | None = None,
    on_before_put: Callable[[], Any] | None = None,
) -> str:
    """PUTs one part until it lands: transient errors are retried under ``policy`` (spending the file's budget);
    an expired URL is re-signed without failing the file. Returns the ETag."""
    url = await urls.url_for(part.number)
    for resign in range(MAX_RESIGNS_PER_PART + 1):

        async def attempt(url: str = url) -> str:  # binds this round's URL (a re-signed one replaces it)
            if on_before_put is not None:
                on_before_put()
            return await put_part(session, url, data, progress=progress)

        try:
            return await call_with_retries(
                attempt,
                policy=policy,
                what=f"PUT part {part.number}",
                on_retry=on_retry,
                idempotent=True,  # re-PUTting a part number replaces that part (docs/gc-api.md §1)
            )
        except PresignedUrlExpired as expired:
            if resign == MAX_RESIGNS_PER_PART:
                raise
            log.info("part %d: presigned URL refused (%s); signing it again", part.number, expired.status)
            if on_retry is not None:
                on_retry(f"PUT part {part.number}", expired, 0.0)
            url = await urls.resign(part.number)
    raise AssertionError("unreachable")

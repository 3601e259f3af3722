"""Mask downloads: the image of each Mask answer, to ``masks/<case>/<question>/<reader>.<ext>`` under the export folder.

Each file goes through the ledger's ``mask`` machine (``pending → downloading → verified | failed``):

* **Resume.** Bytes go to ``.gcbulk/partial/<id>.part`` as they arrive. A cut connection is retried (the client's
  retry policy) with ``Range: bytes=<bytes on disk - 1>-``, in this run or the next; the object store's ETag, recorded
  at the first byte, and the one overlapping byte tell whether the partial bytes still belong to the same object
  (else it starts over).
* **Expiry.** Signed URLs live about 300 s (docs/gc-api.md §4). A 403 from the object store means the URL expired (a long
  retry, a slow link): the file URL is resolved again on the API host, at most ``MAX_RESOLVES`` times per file.
* **Verification.** The size must equal what the object store announced (Content-Range / Content-Length); when its
  ETag is a plain MD5 (single-part S3 objects) the MD5 must match too. The SHA-256 of the file is recorded, and only a
  verified file is moved into ``masks/``. On later runs a verified file is skipped when it is still there with its
  size and mtime (or, after an mtime change, its SHA-256).
* **Names.** Every component comes from ``engine/results/safe_paths.py``; an image with several files (``.mhd`` + ``.zraw``)
  gets a folder ``<reader>/`` with the server's file names, so the header still finds its data file.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import anyio

from gcbulk.engine.gc.errors import (
    Disposition,
    GcbulkError,
    PresignedUrlExpired,
    ResponseTooLarge,
    TransportError,
    classify,
)
from gcbulk.engine.gc.retry import RetryBudget, call_with_retries, item_budget
from gcbulk.engine.results.dicom_instances import image_files, resolve
from gcbulk.engine.results.safe_paths import (
    file_suffix,
    inside,
    relative_path,
    safe_component,
)
from gcbulk.safe_files import make_private_dirs, open_private_binary
from gcbulk.state.mask_records import MaskRow
from gcbulk.state.results_ledger import EXPORT_DIR, ImageAnswer, ResultsLedger

log = logging.getLogger(__name__)

MASKS_DIR = "masks"
PARTIAL_DIR = "partial"
CHUNK_BYTES = 1024 * 1024
# A URL refused right after it was signed is not expiry; stop asking for new ones then.
MAX_RESOLVES = 3
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')
_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+)$")
GROUND_TRUTH_SUFFIX = "-ground-truth"
NO_CASE = "_no-display-set"


class MaskIntegrityError(GcbulkError):
    """The downloaded bytes do not match what the object store announced (size or MD5)."""


class DownloadDeadlineExceeded(GcbulkError):
    """One file took longer than its overall deadline (a trickling or endless body); it fails, the export goes on."""


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds on one mask download (issue 14: an endless body once filled 3.4 GB in 20 s). ``max_bytes`` caps a file
    whose size the object store does not announce, and any announcement; ``deadline_seconds`` bounds all attempts
    at one file together, retries and re-signed URLs included."""

    max_bytes: int = 8 * 1024**3
    deadline_seconds: float = 3600.0


@dataclass
class MaskStats:
    downloaded: int = 0
    skipped: int = 0
    failed: int = 0
    resumed: int = 0
    resolved_again: int = 0
    bytes: int = 0
    failures: list[str] = field(default_factory=list)


def reader_component(creator: str, is_ground_truth: bool) -> str:
    """The reader part of a mask path; ground truth apart, as an editor may also answer as a reader."""
    name = safe_component(creator, fallback="reader")
    return name + GROUND_TRUTH_SUFFIX if is_ground_truth else name


def case_component(answer: ImageAnswer) -> str:
    if answer.display_set_pk is None:
        return NO_CASE
    return safe_component(answer.case_title or answer.display_set_pk, fallback=answer.display_set_pk)


def mask_paths(base: PurePosixPath, files: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Where each file of an answer's image goes: ``<base>.<ext>`` for a single file; a folder ``<base>/`` keeping
    the (sanitised) server file names when there are several, so an ``.mhd`` still names its data file."""
    if len(files) == 1:
        return [(f"{base}.{file_suffix(files[0]['file'])}", files[0])]
    names = [safe_component(PurePosixPath(str(f["file"]).split("?", 1)[0]).name, fallback="file") for f in files]
    return [(str(base / name), f) for name, f in zip(names, files, strict=True)]


def _content_range(value: str | None) -> tuple[int | None, int] | None:
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        return None
    start = int(match.group(1)) if match.group(1) is not None else None
    return start, int(match.group(3))


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def _hashes(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


class MaskDownloader:
    """Downloads the masks of an export: ``ensure(answer, question_folder)`` per Mask answer; callers bound how many
    run at once. Every ledger write happens on the event-loop thread."""

    def __init__(self, client: Any, ledger: ResultsLedger, out_dir: Path, limits: DownloadLimits | None = None) -> None:
        self.client = client
        self.limits = limits or DownloadLimits()
        self.ledger = ledger
        self.out_dir = out_dir
        self.stats = MaskStats()

    def _partial_path(self, path: str) -> Path:
        key = hashlib.sha256(path.encode()).hexdigest()[:40]
        return inside(self.out_dir, PurePosixPath(EXPORT_DIR, PARTIAL_DIR, f"{key}.part"))

    def _intact(self, row: MaskRow) -> bool:
        """A verified file still on disk as verified; if not, its row goes back to pending."""
        final = inside(self.out_dir, row.path)
        try:
            stat = final.stat()
        except FileNotFoundError:
            self.ledger.mask_requeued(row.path, "the verified file is missing from the export folder")
            return False
        if stat.st_size != row.size:
            self.ledger.mask_requeued(row.path, f"the file on disk has {stat.st_size} bytes, not {row.size}")
            return False
        if stat.st_mtime_ns == row.mtime_ns:
            return True
        if _hashes(final)[0] == row.sha256:
            self.ledger.mask_touched(row.path, mtime_ns=stat.st_mtime_ns)
            return True
        self.ledger.mask_requeued(row.path, "the file on disk differs from the verified download")
        return False

    async def ensure(self, answer: ImageAnswer, question_folder: str, *, base: PurePosixPath | None = None) -> None:
        """Makes the answer's mask file(s) present and verified; failures are recorded, never raised (except
        cancellation and errors that stop the run, such as a rejected token). ``base``: another place than the
        mask's (a display set's DICOM Image Set, ``engine/results/dicom_instances.py``)."""
        base = base or relative_path(
            MASKS_DIR,
            case_component(answer),
            question_folder,
            reader_component(answer.creator, answer.is_ground_truth),
        )
        known = [row for row in self.ledger.masks_of_answer(answer.answer_pk) if row.image_pk == answer.image_pk]
        here = [row for row in known if row.path.startswith(f"{base}.") or row.path.startswith(f"{base}/")]
        if here and len(here) == len(known) and all(r.state == "verified" and self._intact(r) for r in here):
            self.stats.skipped += len(here)
            return
        try:
            image = await self.client.get_image(answer.image_pk)
            planned = [
                self.ledger.plan_mask(
                    path=path,
                    answer_pk=answer.answer_pk,
                    image_pk=answer.image_pk,
                    file_pk=f.get("pk"),
                    file_url=f["file"],
                )
                for path, f in mask_paths(base, await image_files(self.client, image))
            ]
        except Exception as error:  # noqa: BLE001 - recorded per answer; the export goes on
            if classify(error) in (Disposition.INTERRUPTED, Disposition.STOP_RUN):
                raise
            self._failed(f"answer {answer.answer_pk}: image {answer.image_pk}: {error}")
            return
        if not planned:
            self._failed(f"answer {answer.answer_pk}: image {answer.image_pk} has no files")
            return
        self.ledger.forget_masks(answer.answer_pk, [row.path for row in planned])
        for row in planned:
            if row.state == "verified" and self._intact(row):
                self.stats.skipped += 1
                continue
            await self._download_file(self.ledger.mask(row.path) or row)

    async def ensure_file(self, key: str, path: PurePosixPath, *, source: str, file_url: str) -> str | None:
        """Makes a socket value's file (not an image's: a PDF, a JSON file; docs/gc-api.md §12) present and verified
        at ``path``, with the same resume and checks as a mask. ``key`` names the value in the ledger (as an answer's
        pk names a mask); ``source`` changes when the server's value is replaced (its pk), which downloads it again.
        Returns None when the file is there and verified, else why it is not (also counted in ``stats`` and recorded
        in the ledger, as for a mask)."""
        row = self.ledger.plan_mask(path=str(path), answer_pk=key, image_pk=source, file_pk=None, file_url=file_url)
        self.ledger.forget_masks(key, [row.path])
        if row.state == "verified" and self._intact(row):
            self.stats.skipped += 1
            return None
        return await self._download_file(self.ledger.mask(row.path) or row)

    def _failed(self, message: str) -> None:
        self.stats.failed += 1
        self.stats.failures.append(message)
        log.warning("mask download failed: %s", message)

    async def _download_file(self, row: MaskRow) -> str | None:
        """Downloads and verifies one file; None when it is there, else why not (recorded, never raised, except what
        stops the run)."""
        self.ledger.mask_downloading(row.path)
        partial = self._partial_path(row.path)
        make_private_dirs(partial.parent, root=self.out_dir)
        if partial.is_symlink():  # planted: never followed (the link goes, whatever it points to stays)
            partial.unlink()
        policy = self.client.retry_policy
        try:
            with item_budget(RetryBudget(policy.attempts_per_item, f"mask {row.path}")):
                with anyio.move_on_after(self.limits.deadline_seconds) as deadline:
                    await self._fetch_with_fresh_urls(row, partial)
                if deadline.cancelled_caught:
                    raise DownloadDeadlineExceeded(
                        f"{row.path}: not downloaded within {self.limits.deadline_seconds:g} s; run the export "
                        "again to resume it, or raise --download-deadline"
                    )
            await self._finish(row, partial)
        except Exception as error:  # noqa: BLE001 - one file fails, the others go on; the partial file stays
            if classify(error) in (Disposition.INTERRUPTED, Disposition.STOP_RUN):
                raise
            if isinstance(error, ResponseTooLarge):
                partial.unlink(missing_ok=True)  # bytes past the limit are not worth resuming
            self.ledger.mask_failed(row.path, str(error))
            self._failed(f"{row.path}: {error}")
            return str(error)
        return None

    async def _fetch_with_fresh_urls(self, row: MaskRow, partial: Path) -> None:
        resolves = 0
        while True:
            signed = await resolve(self.client, row.file_url)
            resolves += 1
            try:
                await call_with_retries(
                    functools.partial(self._fetch, row.path, signed, partial),
                    policy=self.client.retry_policy,
                    what=f"download {row.path}",
                    on_retry=self.client.on_retry,
                )
                return
            except PresignedUrlExpired:
                if resolves >= MAX_RESOLVES:
                    raise
                self.stats.resolved_again += 1
                log.info("signed URL for %s expired; resolving %s again", row.path, row.file_url)

    async def _fetch(self, path: str, signed_url: str, partial: Path) -> None:
        """One GET of the rest of the file into ``partial`` (from its current size on).

        A resume asks from one byte *before* the end of the partial file: the answer is then always a 206 that
        carries the ETag (a partial file that is already whole would get a 416, which has none), and that byte must
        equal the one on disk.
        """
        for _ in range(2):  # the second round starts over after the object turned out to have changed
            start = partial.stat().st_size if partial.exists() else 0
            offset = max(start - 1, 0)
            recorded = self.ledger.mask(path)
            async with self.client.open_signed_download(signed_url, start=offset) as response:
                etag = response.headers.get("ETag")
                if response.status == 416:  # the partial file is longer than the object: not of this object
                    partial.unlink(missing_ok=True)
                    continue
                if response.status == 206:
                    announced = _content_range(response.headers.get("Content-Range"))
                    if announced is None or announced[0] != offset or recorded is None or recorded.etag != etag:
                        partial.unlink(missing_ok=True)
                        continue
                    if offset < start:
                        overlap = await response.content.read(1)
                        if not overlap:
                            raise TransportError("GET", path, ConnectionError("the body ended before its first byte"))
                        if overlap != _last_byte(partial):
                            partial.unlink(missing_ok=True)
                            continue
                    total = announced[1]
                    self.stats.resumed += 1
                else:  # 200: the whole object (first try, or a server that ignored the Range)
                    start = 0
                    total = response.content_length
                limit = self._size_limit(path, total)
                self.ledger.mask_object(path, etag=etag, size=total)
                written = start
                # 0600 and never through a link planted at the partial name (gcbulk/safe_files.py).
                async with anyio.wrap_file(open_private_binary(partial, append=bool(start))) as sink:
                    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                        written += len(chunk)
                        if written > limit:
                            raise ResponseTooLarge(
                                f"{path}: the object store sent more than {limit} bytes"
                                + (
                                    ""
                                    if total is not None
                                    else " (the --max-download-bytes for a file of unannounced size)"
                                )
                            )
                        await sink.write(chunk)
                        self.stats.bytes += len(chunk)
            size = partial.stat().st_size
            if total is not None and size != total:
                # The body ended early without a network error: retry from here, like a cut connection.
                raise TransportError("GET", path, ConnectionError(f"body ended at {size} of {total} bytes"))
            return
        raise MaskIntegrityError(f"{path}: the object store keeps answering for another object; try again later")

    def _size_limit(self, path: str, announced: int | None) -> int:
        if announced is not None and announced > self.limits.max_bytes:
            raise ResponseTooLarge(
                f"{path}: the object store announces {announced} bytes, more than the "
                f"{self.limits.max_bytes} allowed; raise --max-download-bytes if that is right"
            )
        return announced if announced is not None else self.limits.max_bytes

    async def _finish(self, row: MaskRow, partial: Path) -> None:
        recorded = self.ledger.mask(row.path)
        assert recorded is not None
        size = partial.stat().st_size
        if recorded.size is not None and size != recorded.size:
            partial.unlink(missing_ok=True)
            raise MaskIntegrityError(f"{row.path}: got {size} bytes, the object store announced {recorded.size}")
        sha256, md5 = await anyio.to_thread.run_sync(_hashes, partial)
        match = _MD5_ETAG.match(recorded.etag or "")
        if match and match.group(1).lower() != md5:
            partial.unlink(missing_ok=True)
            raise MaskIntegrityError(f"{row.path}: MD5 {md5} differs from the object store's ETag {recorded.etag}")
        final = inside(self.out_dir, row.path)
        make_private_dirs(final.parent, root=self.out_dir)  # masks/<case title>/: only the owner lists it
        os.replace(partial, final)
        self.ledger.mask_verified(row.path, size=size, sha256=sha256, mtime_ns=final.stat().st_mtime_ns)
        self.stats.downloaded += 1

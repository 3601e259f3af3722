"""The multipart checksums a plan records for its new and changed files, computed on the reader threads ahead of the
recorder (``state/replan.py``), several files at once.

The checksum is an MD5 of every byte at the upload's part size (about 1.6 CPU s per GiB, benchmarks/README.md, "The
parts are no longer hashed while they are sent (W2)"). Computed by the recorder one file after another, a first plan
used one core for it while the others waited; ``hashlib``'s MD5 releases the GIL on large buffers, so files hashed on
the reader threads keep every core busy while the recorder writes the cases before them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path

from gcbulk.engine.plan.cases import PlannedCase
from gcbulk.engine.plan.findings import Finding
from gcbulk.engine.plan.parts import FileTooLarge, MiB, adjust_part_size, multipart_checksum
from gcbulk.engine.plan.preflight import READ_AHEAD_CASES

# Small files go to the hashers together, in batches of at least this many bytes: handing a file of a few KiB to another
# thread costs more than hashing it (a future per file of plan_scale.py's 20 000 cost a first plan about 0.5 CPU s
# more, benchmarks/README.md "Planning with the content checks"); 8 MiB is about 13 ms of MD5.
HASH_BATCH_BYTES = 8 * MiB

# (the path the recorder names a file by, the part size)
_ChecksumKey = tuple[Path, int]
# A batch's checksums, in its order; an OSError for a file that could not be read.
_BatchResult = list[str | OSError]
# The recorder's answer to "which of these cases' files will you fingerprint?" (``PlanRecorder.files_to_fingerprint``):
# (path, planned size) pairs.
FilesToFingerprint = Callable[[Sequence[PlannedCase]], Sequence[tuple[Path, int]]]


class PlanChecksums:
    """The recorder's ``fingerprint`` and ``checksum``, answered from a hash started ahead on ``hashers`` when there is
    one, else computed on the caller's thread (a file nobody asked for ahead).

    Use as a context manager: leaving it cancels the hashes not yet started, so an interrupted plan does not wait for
    the rest of a window's files to be read."""

    def __init__(self, *, part_size: int, hashers: Executor) -> None:
        self._part_size = part_size
        self._hashers = hashers
        # A file's checksum being computed: its batch, and its place in the batch.
        self._ahead: dict[_ChecksumKey, tuple[Future[_BatchResult], int]] = {}

    def __enter__(self) -> PlanChecksums:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._forget(list(self._ahead))

    def fingerprint(self, path: Path, size: int) -> tuple[str, int]:
        """``(checksum, part size)`` of the file at ``size``'s upload part size. Raises OSError if it cannot be read."""
        # At the part size the upload will use (engine/upload/file_upload.py), so its streamed part MD5s compare as-is.
        part_size = adjust_part_size(self._part_size, size)
        return self.checksum(path, part_size), part_size

    def checksum(self, path: Path, part_size: int) -> str:
        """The file's multipart checksum at ``part_size`` (``multipart_checksum``). Raises OSError if it cannot be
        read — on whichever thread read it."""
        ahead = self._ahead.pop((path, part_size), None)
        if ahead is None:
            return multipart_checksum(path, part_size)
        batch, index = ahead
        checksum = batch.result()[index]
        if isinstance(checksum, OSError):
            raise checksum
        return checksum

    def hashing_ahead(
        self,
        entries: Iterable[PlannedCase | Finding],
        files_to_fingerprint: FilesToFingerprint,
        window: int = READ_AHEAD_CASES,
    ) -> Iterator[PlannedCase | Finding]:
        """``entries`` unchanged, with the checksums of each ``window`` of cases' new and changed files started on
        the hashers before the window before it is yielded, as ``Preflight.reading_ahead`` does for the content
        checks: the files of one window are hashed while the recorder records the one before. A window's hashes the
        recorder did not take (a duplicate title, a part size that changed) are dropped once it is recorded."""
        earlier: tuple[list[PlannedCase | Finding], list[_ChecksumKey]] | None = None
        pending: list[PlannedCase | Finding] = []
        for entry in entries:
            pending.append(entry)
            if len(pending) >= window:
                started = self._start(pending, files_to_fingerprint)
                if earlier is not None:
                    yield from earlier[0]
                    self._forget(earlier[1])
                earlier, pending = (pending, started), []
        started = self._start(pending, files_to_fingerprint)
        for held, keys in (earlier or ([], [])), (pending, started):
            yield from held
            self._forget(keys)

    def _start(
        self, entries: Sequence[PlannedCase | Finding], files_to_fingerprint: FilesToFingerprint
    ) -> list[_ChecksumKey]:
        started: list[_ChecksumKey] = []
        batch: list[_ChecksumKey] = []
        batch_bytes = 0
        for path, size in files_to_fingerprint([entry for entry in entries if isinstance(entry, PlannedCase)]):
            try:
                part_size = adjust_part_size(self._part_size, size)
            except FileTooLarge:
                continue  # the recorder meets it when it records the file, as without hashing ahead
            batch.append((path, part_size))
            batch_bytes += size
            if batch_bytes >= HASH_BATCH_BYTES:
                started += self._submit(batch)
                batch, batch_bytes = [], 0
        return started + self._submit(batch)

    def _submit(self, batch: list[_ChecksumKey]) -> list[_ChecksumKey]:
        if batch:
            future = self._hashers.submit(_checksums, batch)
            self._ahead.update((key, (future, index)) for index, key in enumerate(batch))
        return batch

    def _forget(self, keys: Iterable[_ChecksumKey]) -> None:
        for key in keys:
            ahead = self._ahead.pop(key, None)
            if ahead is not None:
                ahead[0].cancel()  # not started yet: never read; running or done: its result is dropped


def _checksums(files: Sequence[_ChecksumKey]) -> _BatchResult:
    """Each file's ``multipart_checksum``, or the OSError that kept it from being read (for the recorder to meet)."""
    checksums: _BatchResult = []
    for path, part_size in files:
        try:
            checksums.append(multipart_checksum(path, part_size))
        except OSError as exc:
            checksums.append(exc)
    return checksums

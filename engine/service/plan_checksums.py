"""The multipart checksums a plan records for its new and changed files, computed on the reader threads ahead of the
recorder (``state/replan.py``), several files at once.

The checksum is an MD5 of every byte at the upload's part size (about 1.6 CPU s per GiB, benchmarks/README.md, "The
parts are no longer hashed while they are sent (W2)"). Computed by the recorder one file after another, a first plan
used one core for it while the others waited; ``hashlib``'s MD5 releases the GIL on large buffers, so files hashed on
the reader threads keep every core busy while the recorder writes the cases before them. Files under 1 MiB are still
hashed by the recorder: for them the threads cost more than they give (``HASH_AHEAD_FROM_BYTES``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from threading import Event
from typing import Protocol

from gcbulk.engine.plan.cases import PlannedCase
from gcbulk.engine.plan.parts import FileTooLarge, MiB, adjust_part_size, multipart_checksum
from gcbulk.engine.plan.preflight import StartAhead

# Files smaller than this are left to the recorder, hashed as it records them: their cost is an open, a read and
# Python, not MD5 (which releases the GIL only on large buffers), so on another thread they only contend for the GIL,
# and asking the ledger which of them changed costs a re-plan a query per window. plan_scale.py's tree of 20 000 files
# of a few KiB, all handed over in batches: 0.1-0.2 CPU s more per plan, no faster (benchmarks/README.md "Planning with
# the content checks"). 1 MiB is ~1.6 ms of MD5.
HASH_AHEAD_FROM_BYTES = 1 * MiB
# The files hashed ahead go to the hashers in batches of at least this many bytes, a future per batch rather than per
# file; a bigger file is a batch of its own, so several big files are hashed at once.
HASH_BATCH_BYTES = 8 * MiB

# (the path the recorder names a file by, the part size)
_ChecksumKey = tuple[Path, int]
# A batch's checksums, in its order; an OSError for a file that could not be read.
_BatchResult = list[str | OSError]


class FilesToFingerprint(Protocol):
    """The recorder's answer to "which of these cases' files of at least ``min_size`` bytes will you fingerprint?"
    (``PlanRecorder.files_to_fingerprint``): ``(path, planned size)`` pairs."""

    def __call__(self, cases: Sequence[PlannedCase], *, min_size: int) -> Sequence[tuple[Path, int]]: ...


class PlanChecksums:
    """The recorder's ``fingerprint`` and ``checksum``, answered from a hash started ahead on ``hashers`` when there is
    one, else computed on the caller's thread (a file nobody asked for ahead).

    Use as a context manager: leaving it cancels the hashes not yet started and stops those under way, so an
    interrupted plan does not wait for a window's files to be read to their end (the pool's shutdown waits for its
    running tasks)."""

    def __init__(self, *, part_size: int, hashers: Executor) -> None:
        self._part_size = part_size
        self._hashers = hashers
        self._stop = Event()
        # A file's checksum being computed: its batch, and its place in the batch.
        self._ahead: dict[_ChecksumKey, tuple[Future[_BatchResult], int]] = {}

    def __enter__(self) -> PlanChecksums:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
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

    def starting_ahead(self, files_to_fingerprint: FilesToFingerprint) -> StartAhead:
        """For ``Preflight.reading_ahead(also=…)``: for each window of cases, start hashing the files of theirs
        that ``files_to_fingerprint`` (the recorder) names, and drop the hashes the recorder did not take (a duplicate
        title's, one at a part size that changed) once those cases are recorded."""

        def start(cases: Sequence[PlannedCase]) -> Callable[[], None]:
            started = self._start(cases, files_to_fingerprint)
            return lambda: self._forget(started)

        return start

    def _start(self, cases: Sequence[PlannedCase], files_to_fingerprint: FilesToFingerprint) -> list[_ChecksumKey]:
        started: list[_ChecksumKey] = []
        batch: list[_ChecksumKey] = []
        batch_bytes = 0
        for path, size in files_to_fingerprint(cases, min_size=HASH_AHEAD_FROM_BYTES):
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
            future = self._hashers.submit(_checksums, batch, self._stop)
            self._ahead.update((key, (future, index)) for index, key in enumerate(batch))
        return batch

    def _forget(self, keys: Iterable[_ChecksumKey]) -> None:
        for key in keys:
            ahead = self._ahead.pop(key, None)
            if ahead is not None:
                ahead[0].cancel()  # not started yet: never read; running or done: its result is dropped


def _checksums(files: Sequence[_ChecksumKey], stop: Event) -> _BatchResult:
    """Each file's ``multipart_checksum``, or the OSError that kept it from being read (for the recorder to meet).
    Raises ChecksumStopped once ``stop`` is set: nobody will take the rest."""
    checksums: _BatchResult = []
    for path, part_size in files:
        try:
            checksums.append(multipart_checksum(path, part_size, stop))
        except OSError as exc:
            checksums.append(exc)
    return checksums

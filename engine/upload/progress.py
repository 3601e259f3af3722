"""Transfer statistics as snapshots, the progress line, and the JSON event stream.

``TransferStats.snapshot()`` is the one source of numbers (rclone's ``RemoteStats``): the periodic progress line, the
end-of-run summary, the benchmarks and a metrics endpoint all read the same frozen ``StatsSnapshot``. Bytes are
counted where they flow (``engine/upload/s3_parts.py`` reports each slice written, and takes it back if the PUT fails).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gcbulk.redaction import redact
from gcbulk.safe_files import open_private_append

MIB = 1024 * 1024
# The speed shown is measured over a recent window, so the ETA follows a link that got slower or faster.
RATE_WINDOW_SECONDS = 20.0


@dataclass(frozen=True)
class StatsSnapshot:
    elapsed_seconds: float
    bytes_total: int
    bytes_done: int  # including bytes an earlier run sent (bytes_resumed)
    bytes_resumed: int
    files_total: int
    files_done: int
    files_failed: int
    cases_total: int
    cases_done: int
    cases_failed: int
    retries: int
    bytes_per_second: float  # over the recent window
    average_bytes_per_second: float  # since the start
    # The adaptive limits now (engine/gc/pacer.py): API calls and image imports in flight; 0 before a run has them.
    api_calls_limit: int = 0
    imports_limit: int = 0

    @property
    def mib_per_second(self) -> float:
        return self.bytes_per_second / MIB

    @property
    def eta_seconds(self) -> float | None:
        remaining = max(self.bytes_total - self.bytes_done, 0)
        if remaining == 0:
            return 0.0
        rate = self.bytes_per_second or self.average_bytes_per_second
        return remaining / rate if rate > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mib_per_second": round(self.mib_per_second, 3), "eta_seconds": self.eta_seconds}


class TransferStats:
    """Counters updated by the engine on the event-loop thread (and, for bytes, possibly a reader thread)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self.bytes_total = 0
        self.bytes_done = 0
        self.bytes_resumed = 0
        self.files_total = 0
        self.files_done = 0
        self.files_failed = 0
        self.cases_total = 0
        self.cases_done = 0
        self.cases_failed = 0
        self.retries = 0
        # Reads the adaptive limits (API calls, imports in flight); set by the engine once its run has them.
        self.limits: Callable[[], tuple[int, int]] | None = None
        self._samples: deque[tuple[float, int]] = deque([(self._started, 0)])

    def add_bytes(self, delta: int) -> None:
        """Progress callback: bytes written to the network; negative when a failed attempt gives them back."""
        with self._lock:
            self.bytes_done += delta
            now = self._clock()
            self._samples.append((now, self.bytes_done))
            while len(self._samples) > 2 and now - self._samples[1][0] > RATE_WINDOW_SECONDS:
                self._samples.popleft()

    def add_resumed(self, count: int) -> None:
        """Bytes an earlier run already sent: done, but not part of this run's speed."""
        with self._lock:
            self.bytes_done += count
            self.bytes_resumed += count
            self._samples = deque((moment, sent + count) for moment, sent in self._samples)

    def count_retry(self, *_: object) -> None:
        with self._lock:
            self.retries += 1

    def snapshot(self) -> StatsSnapshot:
        api_calls_limit, imports_limit = self.limits() if self.limits is not None else (0, 0)
        with self._lock:
            now = self._clock()
            elapsed = max(now - self._started, 1e-9)
            first_time, first_bytes = self._samples[0]
            window = now - first_time
            recent = (self.bytes_done - first_bytes) / window if window > 0 else 0.0
            return StatsSnapshot(
                elapsed_seconds=elapsed,
                bytes_total=self.bytes_total,
                bytes_done=self.bytes_done,
                bytes_resumed=self.bytes_resumed,
                files_total=self.files_total,
                files_done=self.files_done,
                files_failed=self.files_failed,
                cases_total=self.cases_total,
                cases_done=self.cases_done,
                cases_failed=self.cases_failed,
                retries=self.retries,
                bytes_per_second=max(recent, 0.0),
                average_bytes_per_second=max((self.bytes_done - self.bytes_resumed) / elapsed, 0.0),
                api_calls_limit=api_calls_limit,
                imports_limit=imports_limit,
            )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def iso_utc(timestamp: float | None = None) -> str:
    """The ``at`` field of every JSON line (event log and log records): ISO-8601 in UTC with a ``Z``."""
    moment = datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat().replace("+00:00", "Z")


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.2f} TiB"


def format_progress_line(snapshot: StatsSnapshot) -> str:
    """One human line: ``cases 12/40 done, 1 failed · files 30/80 · 1.2 GiB/3.4 GiB · 85.3 MiB/s · ETA 0m27s ·
    0 retries · in flight ≤ 4 API calls, ≤ 6 imports`` (the adaptive limits, once a run has them)."""
    limits = (
        f" · in flight ≤ {snapshot.api_calls_limit} API calls, ≤ {snapshot.imports_limit} imports"
        if snapshot.api_calls_limit
        else ""
    )
    return (
        f"cases {snapshot.cases_done}/{snapshot.cases_total} done, {snapshot.cases_failed} failed"
        f" · files {snapshot.files_done}/{snapshot.files_total}"
        f" · {human_bytes(snapshot.bytes_done)}/{human_bytes(snapshot.bytes_total)}"
        f" · {snapshot.mib_per_second:.1f} MiB/s"
        f" · ETA {_duration(snapshot.eta_seconds)}"
        f" · {snapshot.retries} retries"
        f"{limits}"
    )


class EventLog:
    """Appends one JSON object per line: every state change the engine records, and periodic progress.

    Lines are flushed one by one, so a killed run leaves a complete log up to its last step.
    """

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None) -> None:
        self.path = path
        # 0600: the events name cases, whose titles are often patient identifiers (issue 14).
        self._file: IO[str] | None = open_private_append(path) if path else None
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        record = {"at": iso_utc(), "event": event, **redact(fields)}
        line = json.dumps(record, default=str, separators=(",", ":"))
        with self._lock:
            for target in (self._file, self._stream):
                if target is not None:
                    target.write(line + "\n")
                    target.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def stderr_event_log(path: Path | None) -> EventLog:
    return EventLog(path=path, stream=None if path else sys.stderr)

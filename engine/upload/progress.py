"""Transfer statistics as snapshots, the progress line, and the JSON event stream.

``TransferStats.snapshot()`` is the one source of transfer numbers (rclone's ``RemoteStats``): the periodic progress
line, the end-of-run summary, the benchmarks and a metrics endpoint all read the same frozen ``StatsSnapshot``. Bytes
are counted where they flow (``engine/upload/s3_parts.py`` reports each slice written, and takes it back if the PUT
fails). Cases are counted by the ledger wherever it is at hand (``CaseCounts``): every planned case of the job, those
done by an earlier run and those re-queued during this one included, so "done" never exceeds the total.

One unit system: bytes in IEC units (KiB, MiB, GiB; speeds in MiB/s). An ETA is shown only while bytes are moving;
otherwise the line says "stopped", or what the cases wait for once every byte is sent.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gcbulk.engine.gc.errors import UploadCapReached, UploadQuotaReached
from gcbulk.redaction import redact
from gcbulk.safe_files import open_private_append

MIB = 1024 * 1024
# The speed shown is measured over a recent window, so the ETA follows a link that got slower or faster.
RATE_WINDOW_SECONDS = 20.0


@dataclass(frozen=True)
class LimitWait:
    """Uploads waiting out one of the server's limits, as of their last refusal: what ``status`` and the progress
    line name while the run is not progressing for that reason."""

    limit: str  # "byte quota" | "upload cap" (the server refused) | "live uploads" (the cap nearly used: no room)
    waiting: int  # items refused and waiting for their next try, or cases waiting for room
    next_try_at: str  # ISO 8601 (UTC) of the soonest next try (or recount of the server's uploads)

    def describe(self) -> str:
        if self.limit == "live uploads":
            return (
                "no room for uploads: this account's live uploads, other tools' included, fill the live-upload "
                f"ceiling under the server's cap — {self.waiting} case(s) waiting, next count at {self.next_try_at}"
            )
        what = "byte quota exhausted" if self.limit == "byte quota" else "upload cap (2000 uploads) reached"
        return f"{what} on the server — {self.waiting} upload(s) waiting, next try at {self.next_try_at}"


# A refusal older than its next try plus this is over: the retry either went through or was refused again (which
# records a new wait).
LIMIT_WAIT_GRACE_SECONDS = 60.0


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
    # The server's upload cap or byte quota refusing uploads now (each limit once): the run waits, and says so.
    limit_waits: tuple[LimitWait, ...] = ()

    @property
    def mib_per_second(self) -> float:
        return self.bytes_per_second / MIB

    @property
    def eta_seconds(self) -> float | None:
        """Seconds to send the rest at the recent rate; None while nothing moves (a stall, a wait, a stop): the
        average since the start would promise an end that a stalled link never reaches."""
        remaining = max(self.bytes_total - self.bytes_done, 0)
        if remaining == 0:
            return 0.0
        return remaining / self.bytes_per_second if self.bytes_per_second > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mib_per_second": round(self.mib_per_second, 3), "eta_seconds": self.eta_seconds}


class TransferStats:
    """Counters updated by the engine on the event-loop thread (and, for bytes, possibly a reader thread)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        # What a server limit refused (the retry's name) → (which limit, wall-clock time of its next try).
        self._limit_waits: dict[str, tuple[str, float]] = {}
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
        # Cases waiting for room under the live-upload ceiling, and seconds to the gate's next count of the server's
        # uploads; set by the engine (engine/upload/server_limits.py CountingGate).
        self.room_waits: Callable[[], tuple[int, float]] | None = None
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

    def count_retry(self, what: object = None, error: object = None, delay: object = 0.0, *_: object) -> None:
        """The retry observer (``engine/gc/retry.py``: what, the error, the delay before the next try)."""
        limit = _server_limit(error)
        with self._lock:
            self.retries += 1
            if limit is not None and isinstance(delay, int | float):
                self._limit_waits[str(what)] = (limit, self._wall_clock() + delay)

    def _current_limit_waits(self) -> tuple[LimitWait, ...]:
        now = self._wall_clock()
        room = self._room_wait(now)
        for what, (_, next_try) in list(self._limit_waits.items()):
            if next_try + LIMIT_WAIT_GRACE_SECONDS < now:
                del self._limit_waits[what]
        by_limit: dict[str, list[float]] = {}
        for limit, next_try in self._limit_waits.values():
            by_limit.setdefault(limit, []).append(next_try)
        return room + tuple(
            LimitWait(limit=limit, waiting=len(tries), next_try_at=iso_utc(int(min(tries))))
            for limit, tries in sorted(by_limit.items())
        )

    def _room_wait(self, now: float) -> tuple[LimitWait, ...]:
        if self.room_waits is None:
            return ()
        waiting, next_count_in = self.room_waits()
        if waiting <= 0:
            return ()
        return (LimitWait(limit="live uploads", waiting=waiting, next_try_at=iso_utc(int(now + next_count_in))),)

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
                limit_waits=self._current_limit_waits(),
            )


@dataclass(frozen=True)
class CaseCounts:
    """The job's cases as the ledger counts them: ``total`` is every planned case (vanished folders aside)."""

    total: int
    done: int
    failed: int
    blocked: int

    @classmethod
    def from_states(cls, by_state: Mapping[str, int]) -> CaseCounts:
        return cls(
            total=sum(n for state, n in by_state.items() if state != "vanished"),
            done=by_state.get("done", 0),
            failed=by_state.get("failed", 0),
            blocked=by_state.get("blocked", 0),
        )

    @classmethod
    def of_pass(cls, snapshot: StatsSnapshot) -> CaseCounts:
        """Without a ledger at hand: the pass's own counts, its total raised to what it finished (a case re-queued
        during the pass is counted once it is done, never as "2/0")."""
        total = max(snapshot.cases_total, snapshot.cases_done + snapshot.cases_failed)
        return cls(total=total, done=snapshot.cases_done, failed=snapshot.cases_failed, blocked=0)

    @property
    def left(self) -> int:
        return max(self.total - self.done - self.failed - self.blocked, 0)


def eta_text(snapshot: StatsSnapshot, cases: CaseCounts, *, moving: bool = True) -> str:
    """``ETA 2m05s`` while bytes move; what holds the job otherwise, never an ETA of zero with work left."""
    if cases.left == 0:
        return "ETA done" if cases.total else "nothing to do"
    if not moving:
        return "stopped"
    if snapshot.bytes_done >= snapshot.bytes_total:
        return "every byte sent; waiting for the server's imports"
    eta = snapshot.eta_seconds
    return f"ETA {format_duration(eta)}" if eta is not None else "stopped (nothing moving)"


def _server_limit(error: object) -> str | None:
    if isinstance(error, UploadQuotaReached):
        return "byte quota"
    if isinstance(error, UploadCapReached):
        return "upload cap"
    return None


def format_duration(seconds: float | None) -> str:
    """``1h02m03s`` / ``2m05s``; ``?`` for None."""
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


def format_progress_line(
    snapshot: StatsSnapshot, cases_by_state: Mapping[str, int] | None = None, *, moving: bool = True
) -> str:
    """One human line: ``cases 12/40 done, 1 failed · files 30/80 · 1.2 GiB/3.4 GiB · 85.3 MiB/s · ETA 0m27s ·
    0 retries · in flight ≤ 4 API calls, ≤ 6 imports`` (the adaptive limits, once a run has them).

    ``cases_by_state``: the ledger's counts (the whole job); without it, the pass's. ``moving`` False: the run was
    stopped, and the line says so instead of an ETA. Files and bytes are the pass's: what this run had to send."""
    cases = CaseCounts.from_states(cases_by_state) if cases_by_state is not None else CaseCounts.of_pass(snapshot)
    blocked = f", {cases.blocked} blocked" if cases.blocked else ""
    waits = "".join(f" · waiting: {wait.describe()}" for wait in snapshot.limit_waits)
    limits = (
        f" · in flight ≤ {snapshot.api_calls_limit} API calls, ≤ {snapshot.imports_limit} imports"
        if snapshot.api_calls_limit
        else ""
    )
    return (
        f"cases {cases.done}/{cases.total} done, {cases.failed} failed{blocked}"
        f" · files {snapshot.files_done}/{max(snapshot.files_total, snapshot.files_done + snapshot.files_failed)}"
        f" · {human_bytes(snapshot.bytes_done)}/{human_bytes(max(snapshot.bytes_total, snapshot.bytes_done))}"
        f" · {snapshot.mib_per_second if moving else 0.0:.1f} MiB/s"
        f" · {eta_text(snapshot, cases, moving=moving)}"
        f" · {snapshot.retries} retries"
        f"{limits}{waits}"
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

"""What every part of the ledger stands on: its database, its clock, and plain reads (``row``, ``rows``, ``scalar``, ``count``).

The ledger is built in layers, each a class that names what it builds on as its base, so no part uses state it does
not declare: ``LedgerCore`` (this) → ``LedgerEvents`` (the event log) and ``LedgerQueries`` (reads by name) →
``LedgerTransitions`` (every state change, checked by ``gcbulk.state.machines``) → ``LedgerServerTruth`` (verify)
and, beside it, ``LedgerWorkers`` (leases) → ``Ledger`` (open, lock, bind).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sqlite_utils import Database

from gcbulk.state.errors import LedgerMissing
from gcbulk.state.sqlite_file import ProcessLock

# kind -> (table, key columns)
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "job": ("job", ("id",)),
    "case": ("cases", ("id",)),
    "display_set": ("display_sets", ("case_id",)),
    "item": ("items", ("id",)),
    "upload": ("uploads", ("id",)),
    "part": ("parts", ("upload_id", "number")),
}
JOB_ROW = 1


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    # The same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ") at half its cost: a ledger statement stamps its rows, about
    # 150 statements a case.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


# Files (or uploads) whose case the ledger remembers at most: those of the cases in flight — a few hundred at the
# engine's limits — stay; the oldest entries, a finished case's, go first. Hand-written rather than an LRU library:
# a dict's insertion order gives first-in, first-out eviction in two lines, and a hit is as cheap as a dict lookup.
CASE_MEMO_ENTRIES = 4096


def remember_case(known: dict[int, int], key: int, case_id: int) -> None:
    """``known[key] = case_id``, first forgetting the oldest entry when ``known`` holds ``CASE_MEMO_ENTRIES``."""
    if key not in known and len(known) >= CASE_MEMO_ENTRIES:
        del known[next(iter(known))]
    known[key] = case_id


@runtime_checkable
class ReadsTogether(Protocol):
    """A store that sends several reads in one round trip (``state/pg_store.py`` ``PgDatabase``)."""

    def read_together(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[dict[str, Any]]]: ...


@runtime_checkable
class CommitsWithNextRead(Protocol):
    """A store that can send a transaction's COMMIT with the read after it (``PgDatabase.commit_rides_next``)."""

    commit_lost: bool

    def commit_rides_next(self) -> AbstractContextManager[None]: ...


class LedgerCore:
    """An open ledger's database and clock. Use ``Ledger.open`` or ``Ledger.open_readonly``."""

    def __init__(
        self, db: Database, path: Path, lock: ProcessLock | None, clock: Callable[[], datetime] | None
    ) -> None:
        self.db = db
        # What the store can do, asked once: an isinstance check against a runtime-checkable Protocol walks its
        # members each time (~20 µs in Python 3.11), and rows_together and record_then_read ask on every call.
        self._reads_together: ReadsTogether | None = db if isinstance(db, ReadsTogether) else None
        self._commits_with_next_read: CommitsWithNextRead | None = db if isinstance(db, CommitsWithNextRead) else None
        self.path = path
        self._lock = lock
        self._clock = clock or _utc_now
        self.readonly = lock is None
        self._case_root: Path | None = None
        # Which case a file or an upload belongs to never changes: asked for every upload's and part's event.
        # Bounded (``remember_case``), so that a long run does not keep an entry for every file it ever sent.
        self._case_of_file: dict[int, int] = {}
        self._case_of_upload: dict[int, int] = {}
        self._together = False  # inside record_together: the transitions share its transaction
        # Inside record_together: rows read ahead for its steps, and rows as its steps wrote them (``_get``).
        self._rows_ahead: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] | None = None
        # Inside record_together: other reads of its steps made ahead, by (read, id): an upload's sent parts, …
        self._lists_ahead: dict[tuple[str, int], list[dict[str, Any]]] = {}

    # -------------------------------------------------------------------------------------------------- basics
    def now(self) -> str:
        return _iso(self._clock())

    def row(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        # A plain cursor rather than db.query(): reads are the hot path of planning and scheduling, and db.query()
        # wraps each statement in a savepoint. SELECTs open no implicit transaction, so this is safe alongside
        # sqlite-utils' transaction handling.
        cursor = self.db.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def rows_together(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[dict[str, Any]]]:
        """``[self.rows(sql, params) for sql, params in queries]`` — on PostgreSQL in one round trip (one query
        string, ``PgDatabase.read_together``): reads that do not depend on each other's answers, like a case's
        rows, cost one wait on a shared ledger instead of one each. On SQLite, where a statement costs no wait, the
        same statements one by one."""
        if self._reads_together is not None:
            return self._reads_together.read_together(queries)
        return [self.rows(sql, params) for sql, params in queries]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.db.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """A ``SELECT count(*) …`` (or a ``coalesce(sum(…), 0)``): never NULL, an int on both databases."""
        return int(self.scalar(sql, params))

    def _int_or_none(self, sql: str, params: Sequence[Any] = ()) -> int | None:
        """One integer column of one row (an id), or None when there is no such row or it is NULL."""
        value = self.scalar(sql, params)
        return None if value is None else int(value)

    @property
    def job(self) -> dict[str, Any] | None:
        return self.row("SELECT * FROM job WHERE id = ?", (JOB_ROW,))

    @property
    def case_root(self) -> Path:
        # Read once: a bound job's case root never changes (another root is another job, _check_binding), and
        # every case_work needs it.
        if self._case_root is None:
            job = self.job
            if job is None:
                raise LedgerMissing(f"ledger {self.path} is not bound to a job yet")
            self._case_root = Path(job["case_root"])
        return self._case_root

    @property
    def plan_state(self) -> str:
        """``empty`` (never planned), ``planning`` (a plan was interrupted), ``complete`` or ``blocked``."""
        job = self.job
        return "empty" if job is None else job["state"]

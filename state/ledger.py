"""The ledger: gcbulk's memory of a job, in one SQLite file, so any run can stop anywhere and resume without duplicates.

Every object gcbulk will create on Grand Challenge — upload, part, display set, value — is written here first, with
its state; every change of state is one transaction (``with db.atomic()``) that also appends to the event log.
The allowed state changes are in ``gcbulk.state.machines`` (the single place they are checked).

This module opens, locks and binds the ledger and holds the transition core and the event log; the named transitions
are in ``gcbulk.state.transitions`` and the queries in ``gcbulk.state.queries``, both mixed into :class:`Ledger`; plan recording is
in ``gcbulk.state.replan``. Only ``state`` imports sqlite_utils.

Public API (all methods run on the thread that opened the ledger; sqlite3 connections are bound to their thread):

Open and bind
    ``Ledger.open(path, binding, *, job_file=None, clock=None)`` — create (0600) or open, take the process lock,
    migrate, bind to the job (``JobBinding``: reader study, base URL, case root). Raises ``LedgerLocked``,
    ``LedgerBindingError``.
    ``Ledger.open_readonly(path, binding=None)`` — for ``gcbulk status`` while a run holds the lock: no lock, no writes.
    ``ledger.close()`` / ``with Ledger.open(...) as ledger:``; ``ledger.case_root``, ``ledger.job``,
    ``ledger.plan_state``.
Record a plan (see ``gcbulk.state.replan``)
    ``with planning(ledger, rules=..., job_file=..., checksum=fn, dry_run=False) as plan:``
    ``plan.add(planned_case)`` for each case, then ``diff = plan.finish(blocked=...)`` → ``PlanDiff``;
    ``plan.titles`` is a set-like record of the titles seen in this plan (for duplicate-title checks in flat memory).
Work to do and in flight
    ``cases_to_run()`` → ``CaseWork`` (planned or running cases with display set, items, files, the live upload of each
    file and its sent parts), ``case_work(case_id)``, ``case_id_by_title(title)``, ``upload(upload_id)``,
    ``uploads_of_file(file_id)``, ``in_flight_uploads()``, ``live_upload_count()`` (for the 2000 cap),
    ``attached_image_items_count()`` (imports in flight), ``counts_by_state()``, ``cases_needing_attention()``.
Transitions (each atomic and idempotent: a repeat returns False and writes nothing; an illegal one raises
``IllegalTransition``; a repeat with another pk/ETag raises ``ConflictingRepeat``)
    case:         ``case_started``, ``case_done``, ``case_failed(reason)``, ``requeue_failed_cases()``,
                  ``requeue_case`` (with its failed items), ``reopen_display_set``
    display set:  ``display_set_creating``, ``display_set_created(pk)``, ``display_set_not_created(reason)``,
                  ``display_set_values_attached``, ``display_set_importing``, ``display_set_done``,
                  ``display_set_failed(reason)``  (all keyed by case id)
    item:         ``item_uploading``, ``item_uploaded``, ``item_attached`` (marks its uploads consumed),
                  ``item_done``, ``item_failed(reason)``, ``item_requeued``
    upload:       ``upload_creating(file_id, part_size=) -> upload_id`` (before POST uploads/),
                  ``upload_initialized(upload_id, pk=, s3_upload_id=, created_at=)``, ``upload_completed`` (all parts
                  must be sent; records the file's checksum), ``upload_consumed``, ``upload_expired(reason)``,
                  ``upload_aborted(reason)``, ``upload_abandoned(reason)``
    part:         ``part_sent(upload_id, number, size=, etag=, md5=)``, ``part_invalidated(upload_id, number, reason)``
    any:          ``transition(kind, key, state, **fields)``, ``record_attempt(kind, key, error) -> attempts``
    together:     ``record_together([step(ledger.item_uploading, item_id), …])`` — transitions the engine takes back to back
                  (no request to the server between them) in one transaction: all or none
Events (``gcbulk.state.event_log``)
    ``append_event(kind, case_id=None, **data)``, ``events(after_id=0, case_id=None)``.

The ledger never holds the API token: ``append_event`` refuses secret-looking keys, and nothing else takes one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from gcbulk.checksums import composite_checksum  # re-exported: the ledger records it
from gcbulk.redaction import redact
from gcbulk.state.dsn import is_postgres_dsn
from gcbulk.state.errors import (  # re-exported: callers import them from gcbulk.state.ledger
    LedgerBindingError,
    LedgerDamaged,
    LedgerDiskFull,
    LedgerError,
    LedgerLocked,
    LedgerMissing,
    LedgerNotALedger,
    LiveUploadExists,
    UnknownRow,
    UploadNotOpen,
)
from gcbulk.state.event_log import LedgerEvents
from gcbulk.state.machines import (
    MACHINES,
    ConflictingRepeat,
    IllegalTransition,
    check_transition,
)
from gcbulk.state.migrations import migrate
from gcbulk.state.queries import LedgerQueries
from gcbulk.state.records import JobBinding
from gcbulk.state.server_truth import LedgerServerTruth
from gcbulk.state.sqlite_file import (
    ProcessLock,
    check_integrity,
    configure,
    create_private_file,
    ledger_faults,
)
from gcbulk.state.transitions import LedgerTransitions
from gcbulk.state.workers import LedgerWorkers

__all__ = [
    "ConflictingRepeat",
    "IllegalTransition",
    "JobBinding",
    "Ledger",
    "LedgerBindingError",
    "LedgerDamaged",
    "LedgerDiskFull",
    "LedgerError",
    "LedgerLocked",
    "LedgerMissing",
    "LedgerNotALedger",
    "LiveUploadExists",
    "UnknownRow",
    "UploadNotOpen",
    "composite_checksum",
    "default_ledger_path",
]

# kind -> (table, key columns)
_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "job": ("job", ("id",)),
    "case": ("cases", ("id",)),
    "display_set": ("display_sets", ("case_id",)),
    "item": ("items", ("id",)),
    "upload": ("uploads", ("id",)),
    "part": ("parts", ("upload_id", "number")),
}
_JOB_ROW = 1


def default_ledger_path(job_file: Path) -> Path:
    """``<job stem>.ledger.sqlite`` next to the job file."""
    return job_file.with_name(f"{job_file.stem}.ledger.sqlite")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Ledger(LedgerEvents, LedgerTransitions, LedgerQueries, LedgerServerTruth, LedgerWorkers):
    """An open ledger bound to one job. Use :meth:`open` or :meth:`open_readonly`."""

    def __init__(
        self, db: Database, path: Path, lock: ProcessLock | None, clock: Callable[[], datetime] | None
    ) -> None:
        self.db = db
        self.path = path
        self._lock = lock
        self._clock = clock or _utc_now
        self.readonly = lock is None
        self._case_root: Path | None = None
        # Which case a file or an upload belongs to never changes: asked for every upload's and part's event.
        self._case_of_file: dict[int, int] = {}
        self._case_of_upload: dict[int, int] = {}
        self._together = False  # inside record_together: the transitions share its transaction

    # ----------------------------------------------------------------------------------------------- open and bind
    @classmethod
    def open(
        cls,
        path: Path | str,
        binding: JobBinding,
        *,
        job_file: Path | str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Ledger:
        """Open (creating if needed) the ledger at ``path`` for the job ``binding``, holding the process lock.

        ``path`` may be a PostgreSQL DSN (``postgresql://…``): then several processes share the ledger (no process
        lock; work is claimed case by case, see ``gcbulk.state.workers``)."""
        if is_postgres_dsn(path):
            from gcbulk.state.pg_open import open_postgres  # psycopg only for a PostgreSQL ledger (state/dsn.py)

            return open_postgres(cls, str(path), binding, job_file, clock)
        path = Path(path).absolute()
        if not path.parent.is_dir():
            raise LedgerError(f"cannot create ledger {path}: folder {path.parent} does not exist")
        lock = ProcessLock(path)
        try:
            with ledger_faults(path):
                if not path.exists():
                    create_private_file(path)
                db = Database(path)
                try:
                    configure(db)
                    check_integrity(db, path)
                    migrate(db)
                    ledger = cls(db, path, lock, clock)
                    ledger._bind(binding, job_file)
                except BaseException:
                    db.close()
                    raise
        except BaseException:
            lock.release()
            raise
        return ledger

    @classmethod
    def open_readonly(cls, path: Path | str, binding: JobBinding | None = None) -> Ledger:
        """Open an existing ledger for reading only (no lock: a running job may hold it)."""
        if is_postgres_dsn(path):
            from gcbulk.state.pg_open import open_postgres

            return open_postgres(cls, str(path), binding, None, None, readonly=True)
        path = Path(path).absolute()
        if not path.exists():
            raise LedgerMissing(f"no ledger at {path}; run 'gcbulk plan' for this job first")
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        db = Database(conn)
        try:
            with ledger_faults(path):
                db.execute("PRAGMA busy_timeout=5000")
                check_integrity(db, path)
                ledger = cls(db, path, None, None)
                if not db["job"].exists():
                    raise LedgerNotALedger(
                        f"{path} is not a gcbulk ledger (it has no job table); point --ledger "
                        "(or GCBULK_LEDGER) at the job's ledger"
                    )
                if binding is not None:
                    ledger._check_binding(binding)
        except BaseException:
            db.close()
            raise
        return ledger

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None  # type: ignore[assignment]
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r}, readonly={self.readonly})"

    def _bind(self, binding: JobBinding, job_file: Path | str | None) -> None:
        if self.job is None:
            now = self._now()
            with self.db.atomic():
                self.db["job"].insert(
                    {
                        "id": _JOB_ROW,
                        "reader_study": binding.reader_study,
                        "base_url": binding.base_url,
                        "case_root": binding.case_root,
                        "job_file": None if job_file is None else str(Path(job_file).absolute()),
                        "state": "empty",
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                self._log("job.bound", subject="job", subject_id=_JOB_ROW, data={"reader_study": binding.reader_study})
        else:
            self._check_binding(binding)

    def _check_binding(self, binding: JobBinding) -> None:
        job = self.job
        if job is None:
            raise LedgerMissing(f"ledger {self.path} has not been bound to a job yet; run 'gcbulk plan' first")
        mismatches = [
            f"{label} is {job[column]!r}, this job has {getattr(binding, column)!r}"
            for column, label in (
                ("reader_study", "reader study"),
                ("base_url", "server"),
                ("case_root", "case root"),
            )
            if job[column] != getattr(binding, column)
        ]
        if mismatches:
            raise LedgerBindingError(
                f"ledger {self.path} belongs to another job: "
                + "; ".join(mismatches)
                + ". Use a separate ledger for this job (--ledger PATH), or move the old ledger away if you really "
                "mean to start over."
            )

    # -------------------------------------------------------------------------------------------------- basics
    def _now(self) -> str:
        return _iso(self._clock())

    def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        # A plain cursor rather than db.query(): reads are the hot path of planning and scheduling, and db.query()
        # wraps each statement in a savepoint. SELECTs open no implicit transaction, so this is safe alongside
        # sqlite-utils' transaction handling.
        cursor = self.db.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.db.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    @property
    def job(self) -> dict[str, Any] | None:
        return self._one("SELECT * FROM job WHERE id = ?", (_JOB_ROW,))

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

    # ------------------------------------------------------------------------------------------- transitions core
    def _key(self, kind: str, key: object) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
        if kind not in _TABLES:
            raise ValueError(f"unknown ledger object kind {kind!r}; expected one of {', '.join(_TABLES)}")
        table, columns = _TABLES[kind]
        values = tuple(key) if isinstance(key, tuple) else (key,)
        if len(values) != len(columns):
            raise ValueError(f"a {kind} is identified by {', '.join(columns)}; got {key!r}")
        return table, columns, values

    def _get(self, kind: str, key: object) -> dict[str, Any]:
        table, columns, values = self._key(kind, key)
        where = " AND ".join(f"{c} = ?" for c in columns)
        row = self._one(f"SELECT * FROM {table} WHERE {where}", values)
        if row is None:
            raise UnknownRow(f"the ledger has no {kind} {key!r}")
        return row

    def transition(self, kind: str, key: object, target: str, **fields: Any) -> bool:
        """Move one object to ``target`` (and set ``fields``) in one transaction with its event.

        Returns False for an idempotent repeat (already in ``target``; nothing written). Raises ``UnknownRow``,
        ``IllegalTransition`` or ``ConflictingRepeat``.
        """
        with self._atomic():
            return self._apply(kind, key, self._get(kind, key), target, fields)

    def _apply(self, kind: str, key: object, row: dict[str, Any], target: str, fields: dict[str, Any]) -> bool:
        """``transition`` of a row its caller has just read in the transaction it holds open (no second read of the
        same row, no savepoint): the same check, the same write, the same event."""
        table, columns, values = self._key(kind, key)
        if not check_transition(MACHINES[kind], key, row["state"], target, row, fields):
            return False
        fields = {name: redact(value) if name == "last_error" else value for name, value in fields.items()}
        updates = {"state": target, "updated_at": self._now(), **fields}
        if kind == "item" and target in ("planned", "failed", "withdrawn"):
            # Its upload session served one try: a retry, or new uploads, get a session of their own (m004).
            updates["upload_session_pk"] = None
        assignments = ", ".join(f"{name} = ?" for name in updates)
        where = " AND ".join(f"{c} = ?" for c in columns)
        self.db.execute(f"UPDATE {table} SET {assignments} WHERE {where}", (*updates.values(), *values))
        self._log(
            f"{kind}.{target}",
            subject=kind,
            subject_id=key,
            case_id=self._case_id_of(kind, row),
            from_state=row["state"],
            to_state=target,
            data=fields,
        )
        return True

    def _atomic(self) -> AbstractContextManager[Any]:
        """A transaction of its own; inside ``record_together`` a part of that one (which rolls back whole)."""
        return nullcontext() if self._together else self.db.atomic()

    def record_attempt(self, kind: str, key: object, error: str | None = None) -> int:
        """Count one more attempt at a case, display set, item or upload; return the new count."""
        if kind not in ("case", "display_set", "item", "upload"):
            raise ValueError(f"attempts are counted for cases, display sets, items and uploads, not {kind!r}")
        table, columns, values = self._key(kind, key)
        where = " AND ".join(f"{c} = ?" for c in columns)
        with self._atomic():
            row = self._get(kind, key)
            attempts = row["attempts"] + 1
            self.db.execute(
                f"UPDATE {table} SET attempts = ?, last_error = ?, updated_at = ? WHERE {where}",
                (attempts, redact(error), self._now(), *values),
            )
            self._log(
                f"{kind}.attempt",
                subject=kind,
                subject_id=key,
                case_id=self._case_id_of(kind, row),
                data={"attempts": attempts, "error": error},
            )
        return attempts

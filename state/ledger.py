"""The ledger: gcbulk's memory of a job, in one SQLite file, so any run can stop anywhere and resume without duplicates.

Every object gcbulk will create on Grand Challenge — upload, part, display set, value — is written here first, with
its state; every change of state is one transaction (``with db.atomic()``) that also appends to the event log.
The allowed state changes are in ``gcbulk.state.machines`` (the single place they are checked).

This module opens, locks and binds the ledger (SQLite, or PostgreSQL for several workers). The rest are layers
:class:`Ledger` stands on, each naming its base (``gcbulk.state.ledger_core`` gives the order): the event log
(``gcbulk.state.event_log``), the queries (``gcbulk.state.queries``), the transitions and their core
(``gcbulk.state.transitions``), verify (``gcbulk.state.server_truth``) and leases (``gcbulk.state.workers``). Plan
recording is in ``gcbulk.state.replan``. Only ``state`` imports sqlite_utils.

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
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlite_utils import Database

from gcbulk.checksums import composite_checksum  # re-exported: the ledger records it
from gcbulk.extras import POSTGRES
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
from gcbulk.state.ledger_core import JOB_ROW
from gcbulk.state.machines import (
    ConflictingRepeat,
    IllegalTransition,
)
from gcbulk.state.migrations import migrate
from gcbulk.state.records import JobBinding
from gcbulk.state.server_truth import LedgerServerTruth
from gcbulk.state.sqlite_file import (
    ProcessLock,
    check_integrity,
    configure,
    create_private_file,
    ledger_faults,
)
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
def default_ledger_path(job_file: Path) -> Path:
    """``<job stem>.ledger.sqlite`` next to the job file."""
    return job_file.with_name(f"{job_file.stem}.ledger.sqlite")


class Ledger(LedgerServerTruth, LedgerWorkers):
    """An open ledger bound to one job. Use :meth:`open` or :meth:`open_readonly`."""

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
            return cls._open_postgres(str(path), binding, job_file, clock)
        path = Path(path).absolute()
        if not path.parent.is_dir():
            raise LedgerError(f"cannot create ledger {path}: folder {path.parent} does not exist")
        lock = ProcessLock(path)
        try:
            with ledger_faults(path):
                if not path.exists():
                    create_private_file(path)
                # No sqlite-utils plugins: whatever the environment has installed must not change the ledger's
                # connection, and looking for them scans every installed package's entry points (~20 ms of CPU at
                # each process start, ~0.1 s with importlib.metadata's import).
                db = Database(path, execute_plugins=False)
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
            return cls._open_postgres(str(path), binding, None, None, readonly=True)
        path = Path(path).absolute()
        if not path.exists():
            raise LedgerMissing(f"no ledger at {path}; run 'gcbulk plan' for this job first")
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        db = Database(conn, execute_plugins=False)  # no plugins, as in open()
        try:
            with ledger_faults(path):
                db.execute("PRAGMA busy_timeout=5000")
                check_integrity(db, path)
                ledger = cls(db, path, None, None)
                if not db.table("job").exists():
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

    @classmethod
    def _open_postgres(
        cls,
        dsn: str,
        binding: JobBinding | None,
        job_file: Path | str | None,
        clock: Callable[[], datetime] | None,
        *,
        readonly: bool = False,
    ) -> Ledger:
        """A ledger on the PostgreSQL database ``dsn``: migrated and bound once, by one process at a time. Raises
        LedgerError naming the install command when psycopg (the postgres extra) is missing."""
        missing = POSTGRES.install_hint("a PostgreSQL ledger (GCBULK_LEDGER or --ledger is a postgresql:// DSN)")
        if missing:
            raise LedgerError(missing)
        from gcbulk.state.pg_store import PgDatabase, job_setup_lock, postgres_faults  # psycopg: the postgres extra

        db = PgDatabase(dsn)
        try:
            with postgres_faults(db.dsn_shown):
                if readonly:
                    ledger = cls(db, db.dsn_shown, None, None)  # type: ignore[arg-type]  # sqlite-utils' shape
                    if not db.table("job").exists():
                        raise LedgerMissing(
                            f"the PostgreSQL ledger {db.dsn_shown} holds no job yet; run 'gcbulk plan' for this job "
                            "first"
                        )
                    if binding is not None:
                        ledger._check_binding(binding)
                    return ledger
                # One process migrates and binds at a time; the others wait on the lock, then find it done.
                with job_setup_lock(db):
                    migrate(db)  # type: ignore[arg-type]
                    ledger = cls(db, db.dsn_shown, None, clock)  # type: ignore[arg-type]
                    ledger.readonly = False
                    assert binding is not None
                    ledger._bind(binding, job_file)
                return ledger
        except BaseException:
            db.close()
            raise

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
            now = self.now()
            with self.db.atomic():
                self.db.table("job").insert(
                    {
                        "id": JOB_ROW,
                        "reader_study": binding.reader_study,
                        "base_url": binding.base_url,
                        "case_root": binding.case_root,
                        "job_file": None if job_file is None else str(Path(job_file).absolute()),
                        "state": "empty",
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                self.record_event(
                    "job.bound", subject="job", subject_id=JOB_ROW, data={"reader_study": binding.reader_study}
                )
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

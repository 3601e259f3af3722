"""Opening the ledger on PostgreSQL (kept apart from gcbulk.state.ledger, which stays under the size limit)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from gcbulk.extras import POSTGRES
from gcbulk.state.errors import LedgerError, LedgerMissing
from gcbulk.state.migrations import migrate


def open_postgres(
    cls: Any,
    dsn: str,
    binding: Any,
    job_file: Path | str | None,
    clock: Callable[[], datetime] | None,
    *,
    readonly: bool = False,
) -> Any:
    """A ``Ledger`` (``cls``) on the PostgreSQL database ``dsn``: migrated and bound once, by one process at a time.

    Raises LedgerError naming the install command when psycopg (the postgres extra) is missing."""
    missing = POSTGRES.install_hint("a PostgreSQL ledger (GCBULK_LEDGER or --ledger is a postgresql:// DSN)")
    if missing:
        raise LedgerError(missing)
    from gcbulk.state.pg_store import PgDatabase, job_setup_lock, postgres_faults  # psycopg: the postgres extra

    db = PgDatabase(dsn)
    try:
        with postgres_faults(db.dsn_shown):
            if readonly:
                ledger = cls(db, db.dsn_shown, None, None)  # type: ignore[arg-type]
                if not db["job"].exists():
                    raise LedgerMissing(
                        f"the PostgreSQL ledger {db.dsn_shown} holds no job yet; run 'gcbulk plan' for this job first"
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

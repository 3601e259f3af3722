"""A job's status read from its ledger, as ``gcbulk status --json`` and ``Job.status()`` give it: counts by state,
the cases that need a person's attention, the workers. Works on a ledger opened read-only while a run is busy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gcbulk.engine.plan.titles import redacted, scrub
from gcbulk.engine.upload.import_deadline import expected_import_seconds, overdue_after
from gcbulk.state.ledger import Ledger


def _redact_row(row: dict[str, Any]) -> dict[str, Any]:
    names = (row["title"], row["folder"])
    return {
        **row,
        "title": redacted(row["title"]),
        "folder": redacted(row["folder"]),
        "last_error": scrub(row["last_error"], *names),
        "findings": [
            {
                **f,
                "message": scrub(f.get("message"), *names),
                "path": scrub(f.get("path"), *names),
                "files": [scrub(p, *names) for p in f.get("files", [])],
                **({"case": redacted(f["case"])} if f.get("case") else {}),
            }
            for f in row["findings"]
        ],
    }


def overdue_imports(ledger: Ledger, now: datetime, *, redact: bool = False) -> list[dict[str, Any]]:
    """Imports waiting longer than ``OVERDUE_FACTOR`` × their expected time (``engine/upload/import_deadline.py``):
    a wait that is not progressing, named while the run still waits (its deadline may be far)."""
    late = []
    for wait in ledger.imports_in_flight():
        waited = (now - datetime.fromisoformat(wait.attached_at)).total_seconds()
        expected = expected_import_seconds(wait.bytes)
        if waited >= overdue_after(wait.bytes):
            late.append(
                {
                    "title": redacted(wait.title) if redact else wait.title,
                    "socket": wait.socket_slug,
                    "waiting_seconds": round(waited),
                    "expected_seconds": round(expected),
                }
            )
    return late


def collect_status(
    ledger: Ledger, *, limit: int | None = None, redact: bool = False, now: datetime | None = None
) -> dict[str, Any]:
    """Counts by state, the cases needing attention and the imports past their expected time; ``redact``: titles
    and folders as hashes (the ledger keeps them)."""
    rows = [
        {
            "case_id": row.case_id,
            "title": row.title,
            "folder": row.folder,
            "state": row.state,
            "last_error": row.last_error,
            "findings": row.findings,
        }
        for row in ledger.cases_needing_attention(limit=limit)
    ]
    return {
        "ledger": str(ledger.path),
        "plan_state": ledger.plan_state,
        "counts": ledger.counts_by_state(),
        "live_uploads": ledger.live_upload_count(),
        "needs_attention": [_redact_row(row) for row in rows] if redact else rows,
        "imports_overdue": overdue_imports(ledger, now or datetime.now(UTC), redact=redact),
        "workers": worker_rows(ledger),
    }


def worker_rows(ledger: Ledger) -> list[dict[str, Any]]:
    """The job's workers as the ledger knows them (several on a PostgreSQL ledger): the live ones, and those that
    stopped or fell silent, with their leases, limits and last published counters."""
    return [
        {
            "worker_id": row.worker_id,
            "host": row.host,
            "pid": row.pid,
            "status": "live" if row.live else "stopped" if row.stopped else "silent",
            "seconds_since_heartbeat": round(row.seconds_since_heartbeat, 1),
            "cases_leased": row.cases_leased,
            "api_limit": row.api_limit,
            "imports_limit": row.imports_limit,
            "holdings": dict(row.holdings),
            "files_done": row.progress.get("files_done"),
            # The server's limits refusing this worker's uploads now (engine/upload/progress.py LimitWait).
            "limit_waits": list(row.progress.get("limit_waits") or []) if row.live else [],
            "bytes_done": row.progress.get("bytes_done"),
        }
        for row in ledger.workers_view()
    ]

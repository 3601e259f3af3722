"""The per-case report of a job (``gcbulk report``): one row per case, read in one pass over the ledger.

Timings come from the ledger's append-only event log (``case.running``, ``case.done``, ``case.failed``), so they are
what happened, not what a process remembered: ``started`` is the first time a run started the case, ``finished``
when it reached its current end state (empty while it is not done or failed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from gcbulk.state.ledger import Ledger
from gcbulk.state.workers import WorkerRow

_END_STATES = ("done", "failed")

# Aggregates are grouped once per table and joined, rather than correlated per case, so a ledger of a million cases
# is read in a few scans. Withdrawn items and files no longer present are not part of the case any more.
_REPORT_SQL = """
WITH sizes AS (
    SELECT items.case_id AS case_id, count(files.id) AS files, coalesce(sum(files.size), 0) AS bytes
    FROM items JOIN files ON files.item_id = items.id
    WHERE items.state != 'withdrawn' AND files.present = 1
    GROUP BY items.case_id
),
sent AS (
    SELECT items.case_id AS case_id, coalesce(sum(parts.size), 0) AS bytes_sent
    FROM parts JOIN uploads ON uploads.id = parts.upload_id JOIN files ON files.id = uploads.file_id
    JOIN items ON items.id = files.item_id
    WHERE parts.state = 'sent'
    GROUP BY items.case_id
),
timings AS (
    SELECT case_id,
           min(CASE WHEN kind = 'case.running' THEN at END) AS started,
           max(CASE WHEN kind IN ('case.done', 'case.failed') THEN at END) AS finished
    FROM events WHERE subject = 'case'
    GROUP BY case_id
)
SELECT cases.id AS case_id, cases.title AS title, cases.folder AS folder, cases.state AS state,
       cases.last_error AS reason, cases.attempts AS attempts,
       display_sets.pk AS display_set_pk, display_sets.state AS display_set_state,
       coalesce(sizes.files, 0) AS files, coalesce(sizes.bytes, 0) AS bytes,
       coalesce(sent.bytes_sent, 0) AS bytes_sent, timings.started AS started, timings.finished AS finished
FROM cases
LEFT JOIN display_sets ON display_sets.case_id = cases.id
LEFT JOIN sizes ON sizes.case_id = cases.id
LEFT JOIN sent ON sent.case_id = cases.id
LEFT JOIN timings ON timings.case_id = cases.id
ORDER BY cases.id
"""


@dataclass(frozen=True, kw_only=True)
class CaseReportRow:
    case_id: int
    title: str
    folder: str
    state: str
    reason: str | None  # the last error of a failed case, or why it is blocked
    attempts: int
    display_set_pk: str | None
    display_set_state: str | None
    files: int
    bytes: int
    bytes_sent: int
    started: str | None  # ISO-8601 UTC, as the ledger records it
    finished: str | None
    duration_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if start is None or end is None:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def case_report(ledger: Ledger) -> Iterator[CaseReportRow]:
    """Every case of the ledger, in planning order. Streams rows: memory stays flat for large jobs."""
    cursor = ledger.db.conn.execute(_REPORT_SQL)
    names = [d[0] for d in cursor.description]
    for values in cursor:
        row = dict(zip(names, values, strict=True))
        finished = row["finished"] if row["state"] in _END_STATES else None
        yield CaseReportRow(
            **{**row, "finished": finished}, duration_seconds=_seconds_between(row["started"], finished)
        )


REPORT_FIELDS = tuple(CaseReportRow.__dataclass_fields__)

# The tables a metrics scrape counts by state. Parts are left out: they are the largest table (up to 10 000 per file)
# and have no state index, and bytes already tell the same story.
_COUNTED = (("case", "cases"), ("display_set", "display_sets"), ("item", "items"), ("upload", "uploads"))


@dataclass(frozen=True, kw_only=True)
class JobCounts:
    by_state: dict[str, dict[str, int]]  # kind -> state -> count
    live_uploads: int  # counting against the server's 2000-upload cap (docs/gc-api.md §1)
    imports_in_flight: int  # image values handed to Grand Challenge and not finished (docs/gc-api.md §2)
    workers: tuple[WorkerRow, ...] = ()  # every worker the job has seen (one view of the job)


def job_counts(ledger: Ledger) -> JobCounts:
    """What a metrics scrape and the summary line show, in one short read (each count uses a state index)."""
    by_state: dict[str, dict[str, int]] = {}
    for kind, table in _COUNTED:
        rows = ledger.db.conn.execute(f"SELECT state, count(*) FROM {table} GROUP BY state ORDER BY state")
        by_state[kind] = dict(rows.fetchall())
    return JobCounts(
        by_state=by_state,
        live_uploads=ledger.live_upload_count(),
        imports_in_flight=ledger.attached_image_items_count(),
        workers=tuple(ledger.workers_view()),
    )

"""The ledger's record of the planner's content checks (table ``content_checks``, migration m008): per file path and
socket, the size, mtime and inode the file had when it was checked and what the checks found (the planner's JSON).

Plain functions over an open ledger (run on the ledger's thread), as ``gcbulk.state.dicom_staging``: the planner
reads one row per checked file and writes back only what it had to read again, in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gcbulk.state.ledger_core import LedgerCore


@dataclass(frozen=True, kw_only=True)
class ContentCheckRow:
    path: str
    socket: str
    size: int
    mtime_ns: int
    inode: int
    definition: str  # the planner's digest of the socket's description
    findings: str  # JSON, as the planner wrote it
    grid: str | None


def content_check(ledger: LedgerCore, path: str, socket: str) -> ContentCheckRow | None:
    """The last recorded check of ``path`` against ``socket``, or None."""
    row = ledger.row("SELECT * FROM content_checks WHERE path = ? AND socket = ?", (path, socket))
    return None if row is None else ContentCheckRow(**row)


def record_content_checks(ledger: LedgerCore, rows: Sequence[ContentCheckRow]) -> None:
    """Keeps ``rows`` (one transaction), each replacing the earlier check of its path and socket: the table holds one
    row per file and socket, however often a file changes."""
    if not rows:
        return
    with ledger.db.atomic():
        ledger.db.conn.executemany(
            "INSERT INTO content_checks (path, socket, size, mtime_ns, inode, definition, findings, grid) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (path, socket) DO UPDATE SET size = excluded.size, "
            "mtime_ns = excluded.mtime_ns, inode = excluded.inode, definition = excluded.definition, "
            "findings = excluded.findings, grid = excluded.grid",
            [(r.path, r.socket, r.size, r.mtime_ns, r.inode, r.definition, r.findings, r.grid) for r in rows],
        )

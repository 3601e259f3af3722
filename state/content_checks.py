"""The ledger's record of what planning read from the case tree's files, so a re-plan reads only what changed:

* ``content_checks`` (migration m008): per file path and socket, the size, mtime and inode the file had when the
  content checks read it, and what they found (the planner's JSON);
* ``file_reads`` (migration m009): per file path and kind of read, the same stamp and what the planner itself read
  (a MetaImage header, a JSON value file's value; the planner's JSON).

Plain functions over an open ledger (run on the ledger's thread), as ``gcbulk.state.dicom_staging``: the planner
reads one row per file and writes back only what it had to read again, in batches. A plan notes the paths it looked
up (``note_seen``, a temporary table: the process holds no per-file memory), and a plan that walked the whole tree
then forgets the rows it did not look up (``forget_unseen``): the tables hold the files of the tree as it is,
not every file that was ever in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from gcbulk.state.ledger_core import LedgerCore

# The two tables, each with the temporary table a plan notes the rows it looked up in, and the column that is the
# second half of its key (after the path).
CacheTable = Literal["content_checks", "file_reads"]
_SEEN = {"content_checks": ("plan_seen_content_checks", "socket"), "file_reads": ("plan_seen_file_reads", "kind")}


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


@dataclass(frozen=True, kw_only=True)
class FileReadRow:
    path: str
    kind: str  # the planner's kind of read ("metaimage-header", "json-value")
    size: int
    mtime_ns: int
    inode: int
    outcome: str  # JSON, as the planner wrote it


def content_check(ledger: LedgerCore, path: str, socket: str) -> ContentCheckRow | None:
    """The last recorded check of ``path`` against ``socket``, or None."""
    # A plain tuple, not ``ledger.row``'s dict: asked once per checked file of every plan.
    row = ledger.db.conn.execute(
        "SELECT size, mtime_ns, inode, definition, findings, grid FROM content_checks WHERE path = ? AND socket = ?",
        (path, socket),
    ).fetchone()
    if row is None:
        return None
    size, mtime_ns, inode, definition, findings, grid = row
    return ContentCheckRow(
        path=path,
        socket=socket,
        size=size,
        mtime_ns=mtime_ns,
        inode=inode,
        definition=definition,
        findings=findings,
        grid=grid,
    )


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


def file_read(ledger: LedgerCore, path: str, kind: str) -> FileReadRow | None:
    """The last recorded read of ``path`` of this kind, or None."""
    row = ledger.db.conn.execute(
        "SELECT size, mtime_ns, inode, outcome FROM file_reads WHERE path = ? AND kind = ?", (path, kind)
    ).fetchone()
    if row is None:
        return None
    size, mtime_ns, inode, outcome = row
    return FileReadRow(path=path, kind=kind, size=size, mtime_ns=mtime_ns, inode=inode, outcome=outcome)


def record_file_reads(ledger: LedgerCore, rows: Sequence[FileReadRow]) -> None:
    """Keeps ``rows`` (one transaction), each replacing the earlier read of its path and kind."""
    if not rows:
        return
    with ledger.db.atomic():
        ledger.db.conn.executemany(
            "INSERT INTO file_reads (path, kind, size, mtime_ns, inode, outcome) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (path, kind) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
            "inode = excluded.inode, outcome = excluded.outcome",
            [(r.path, r.kind, r.size, r.mtime_ns, r.inode, r.outcome) for r in rows],
        )


def start_seen(ledger: LedgerCore, table: CacheTable) -> None:
    """Starts noting the rows this plan looks up in ``table`` (a temporary table, this connection's alone: another
    worker's plan on a shared PostgreSQL ledger notes its own)."""
    seen, column = _SEEN[table]
    with ledger.db.atomic():
        ledger.db.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {seen} (path TEXT, {column} TEXT, PRIMARY KEY (path, {column}))"
        )
        ledger.db.execute(f"DELETE FROM {seen}")


def note_seen(ledger: LedgerCore, table: CacheTable, keys: Iterable[tuple[str, str]]) -> None:
    """Notes that this plan looked up the rows ``keys`` — (path, socket) or (path, kind) — of ``table`` (after
    ``start_seen``)."""
    rows = list(keys)
    if rows:
        seen, column = _SEEN[table]
        with ledger.db.atomic():
            ledger.db.conn.executemany(
                f"INSERT INTO {seen} (path, {column}) VALUES (?, ?) ON CONFLICT DO NOTHING", rows
            )


def forget_unseen(ledger: LedgerCore, table: CacheTable, under: str) -> int:
    """Deletes the rows of ``table`` for files under the folder ``under`` (the plan's case root) that this plan did not
    look up — files that vanished, or that no rule (or socket, or kind of read) takes any more; returns how many. Call
    it only after a plan that walked the whole tree: rows outside ``under`` are never touched."""
    seen, column = _SEEN[table]
    prefix = under.rstrip("/") + "/"
    with ledger.db.atomic():
        cursor = ledger.db.conn.execute(
            f"DELETE FROM {table} WHERE substr(path, 1, ?) = ? AND NOT EXISTS (SELECT 1 FROM {seen} WHERE "
            f"{seen}.path = {table}.path AND {seen}.{column} = {table}.{column})",
            (len(prefix), prefix),
        )
        return max(0, cursor.rowcount)

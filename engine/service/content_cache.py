"""What planning read from the tree's files, remembered in the ledger, so a second one-shot plan, or follow mode's
next poll, reads no file that did not change — and the process holds no per-file memory between plans (issue 31):

* ``LedgerContentCache``: a ``ContentCache`` (``gcbulk.engine.plan.content``) over the ``content_checks`` table;
* ``LedgerFileReads``: a ``FileReadCache`` (``gcbulk.engine.plan.file_reads``) over the ``file_reads`` table, for
  the planner's own reads (MetaImage headers, JSON value files).

Used on the ledger's thread, inside ``plan_into_ledger``: a lookup is one primary-key read; results read anew, and
the rows looked up, are held and written in batches (one transaction each), and whatever is held is written by
``flush`` at the end of the plan. After a plan that walked the whole tree, ``forget_unseen`` deletes the rows it did
not look up (files vanished, no longer planned, or no longer read that way), so the tables do not grow with every
file ever planned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from gcbulk.engine.plan.content import CheckedContent, ContentKey
from gcbulk.engine.plan.file_reads import FileStamp, ReadKind
from gcbulk.state.content_checks import (
    CacheTable,
    ContentCheckRow,
    FileReadRow,
    content_check,
    file_read,
    forget_unseen,
    note_seen,
    record_content_checks,
    record_file_reads,
    start_seen,
)
from gcbulk.state.ledger import Ledger

# Results (and paths looked up) written per transaction: one write per this many files, and at most this many held
# in memory.
BATCH = 2000

Row = TypeVar("Row", ContentCheckRow, FileReadRow)


class _PlanRows(Generic[Row]):
    """One cache table as one plan uses it: the rows it looked up, noted in the ledger (a temporary table), and the
    results it read anew, held and written a batch at a time (one transaction each) through ``write``."""

    def __init__(self, ledger: Ledger, table: CacheTable, write: Callable[[Ledger, list[Row]], None], batch: int):
        self.ledger = ledger
        self.table: CacheTable = table
        self.batch = batch
        self._write: Callable[[Ledger, list[Row]], None] = write
        self._seen: list[tuple[str, str]] = []
        self._held: list[Row] = []
        start_seen(ledger, table)

    def looked_up(self, path: str, key: str) -> None:
        self._seen.append((path, key))
        if len(self._seen) >= self.batch:
            self._note_seen()

    def hold(self, row: Row) -> None:
        self._held.append(row)
        if len(self._held) >= self.batch:
            self.flush()

    def flush(self) -> None:
        held, self._held = self._held, []
        self._write(self.ledger, held)
        self._note_seen()

    def forget_unseen(self, case_root: str) -> int:
        self.flush()
        return forget_unseen(self.ledger, self.table, case_root)

    def _note_seen(self) -> None:
        seen, self._seen = self._seen, []
        note_seen(self.ledger, self.table, seen)


class LedgerContentCache:
    """A ``ContentCache`` whose entries are rows of the ledger's ``content_checks`` table."""

    def __init__(self, ledger: Ledger, batch: int = BATCH) -> None:
        self.ledger = ledger
        self._rows = _PlanRows[ContentCheckRow](ledger, "content_checks", record_content_checks, batch)

    def get(self, key: ContentKey) -> CheckedContent | None:
        self._rows.looked_up(key.path, key.socket)
        row = content_check(self.ledger, key.path, key.socket)
        if row is None:
            return None
        if (row.size, row.mtime_ns, row.inode, row.definition) != (key.size, key.mtime_ns, key.inode, key.definition):
            return None  # the file, or the socket it is checked against, changed since
        return CheckedContent.from_json(row.findings, row.grid)

    def put(self, key: ContentKey, checked: CheckedContent) -> None:
        self._rows.looked_up(key.path, key.socket)
        findings, grid = checked.as_json()
        self._rows.hold(
            ContentCheckRow(
                path=key.path,
                socket=key.socket,
                size=key.size,
                mtime_ns=key.mtime_ns,
                inode=key.inode,
                definition=key.definition,
                findings=findings,
                grid=grid,
            )
        )

    def flush(self) -> None:
        """Writes the results held so far."""
        self._rows.flush()

    def forget_unseen(self, case_root: str) -> int:
        """Deletes the rows of files under ``case_root`` this plan did not check; returns how many. Only after a plan
        whose content checks ran over the whole tree."""
        return self._rows.forget_unseen(case_root)


class LedgerFileReads:
    """A ``FileReadCache`` whose entries are rows of the ledger's ``file_reads`` table."""

    def __init__(self, ledger: Ledger, batch: int = BATCH) -> None:
        self.ledger = ledger
        self._rows = _PlanRows[FileReadRow](ledger, "file_reads", record_file_reads, batch)

    def get(self, stamp: FileStamp, kind: ReadKind) -> str | None:
        self._rows.looked_up(stamp.path, kind)
        row = file_read(self.ledger, stamp.path, kind)
        if row is None or (row.size, row.mtime_ns, row.inode) != (stamp.size, stamp.mtime_ns, stamp.inode):
            return None  # never read, or the file changed since
        return row.outcome

    def put(self, stamp: FileStamp, kind: ReadKind, outcome: str) -> None:
        self._rows.looked_up(stamp.path, kind)
        self._rows.hold(
            FileReadRow(
                path=stamp.path, kind=kind, size=stamp.size, mtime_ns=stamp.mtime_ns, inode=stamp.inode, outcome=outcome
            )
        )

    def flush(self) -> None:
        """Writes the outcomes held so far."""
        self._rows.flush()

    def forget_unseen(self, case_root: str) -> int:
        """Deletes the rows of files under ``case_root`` this plan did not read; returns how many. Only after a plan
        that walked the whole tree."""
        return self._rows.forget_unseen(case_root)

"""The planner's content checks, remembered in the ledger: a ``ContentCache`` (``gcbulk.engine.plan.content``) over
the ``content_checks`` table, so a second one-shot plan, or follow mode's next poll, reads no file that did not change
— and the process holds no per-file memory between plans (issue 31).

Used on the ledger's thread, inside ``plan_into_ledger``: a lookup is one primary-key read; results read anew are
held and written in batches (one transaction each), and whatever is held is written by ``flush`` at the end of the
plan.
"""

from __future__ import annotations

from gcbulk.engine.plan.content import CheckedContent, ContentKey
from gcbulk.state.content_checks import ContentCheckRow, content_check, record_content_checks
from gcbulk.state.ledger import Ledger

# Results written per transaction: one fsync per this many files read, and at most this many held in memory.
BATCH = 2000


class LedgerContentCache:
    """A ``ContentCache`` whose entries are rows of the ledger's ``content_checks`` table."""

    def __init__(self, ledger: Ledger, batch: int = BATCH) -> None:
        self.ledger = ledger
        self.batch = batch
        self._held: list[ContentCheckRow] = []

    def get(self, key: ContentKey) -> CheckedContent | None:
        row = content_check(self.ledger, key.path, key.socket)
        if row is None:
            return None
        if (row.size, row.mtime_ns, row.inode, row.definition) != (key.size, key.mtime_ns, key.inode, key.definition):
            return None  # the file, or the socket it is checked against, changed since
        return CheckedContent.from_json(row.findings, row.grid)

    def put(self, key: ContentKey, checked: CheckedContent) -> None:
        findings, grid = checked.as_json()
        self._held.append(
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
        if len(self._held) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Writes the results held so far."""
        held, self._held = self._held, []
        record_content_checks(self.ledger, held)

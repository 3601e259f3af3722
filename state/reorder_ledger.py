"""A reorder's memory: which display sets get which order, and how far the PATCHes got (``gcbulk reorder``).

The ledger is any file (``gcbulk reorder --ledger``, default ``<slug>.reorder.sqlite``), opened with
``gcbulk.state.ledger.Ledger`` (0600, process lock, migrations, event log) and bound to the server and the reader study with
the constant case root ``REORDER_ROOT``. Items follow the ``reorder_item`` machine of ``gcbulk.state.machines``. The plan
(target orders) is kept so that a rerun after an interruption resumes the same plan; the server's current order
decides what is still to do, so a rerun never PATCHes a display set that already has its target.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcbulk.state.ledger import JobBinding, Ledger
from gcbulk.state.ledger_extension import LedgerExtension

REORDER_ROOT = "(reorder: no local files)"


@dataclass(frozen=True, kw_only=True)
class ReorderRow:
    display_set_pk: str
    title: str | None
    target_order: int
    previous_order: int | None
    state: str
    attempts: int
    last_error: str | None


class ReorderLedger(LedgerExtension):
    """``with ReorderLedger.open(path, reader_study=..., base_url=...) as ledger:``."""

    @classmethod
    def open(cls, path: Path, *, reader_study: str, base_url: str) -> ReorderLedger:
        binding = JobBinding(reader_study=reader_study, base_url=base_url, case_root=REORDER_ROOT)
        return cls(Ledger.open(path, binding))

    @staticmethod
    def _reorder(row: dict[str, Any]) -> ReorderRow:
        return ReorderRow(**{k: row[k] for k in ReorderRow.__dataclass_fields__})

    def plan_reorder(self, items: Iterable[tuple[str, str | None, int, int | None]]) -> int:
        """Records ``(display set pk, title, target order, current order)``. An item whose target changed goes back
        to ``planned``; one with the same target keeps its state, so a rerun of the same plan resumes it. Returns
        how many items are new or re-targeted."""
        with self.batch():
            return self._plan(items)

    def _plan(self, items: Iterable[tuple[str, str | None, int, int | None]]) -> int:
        changed = 0
        for pk, title, target, current in items:
            row = self.row("SELECT * FROM reorder_items WHERE display_set_pk = ?", (pk,))
            if row is None:
                with self.db.atomic():
                    self.db.execute(
                        "INSERT INTO reorder_items (display_set_pk, title, target_order, previous_order, state, "
                        "attempts, updated_at) VALUES (?, ?, ?, ?, 'planned', 0, ?)",
                        (pk, title, target, current, self.now()),
                    )
                changed += 1
            elif row["target_order"] != target:
                if row["state"] == "planned":
                    with self.db.atomic():
                        self.db.execute(
                            "UPDATE reorder_items SET target_order = ? WHERE display_set_pk = ?", (target, pk)
                        )
                else:
                    self._transition(
                        "reorder_item",
                        "reorder_items",
                        "display_set_pk",
                        pk,
                        "planned",
                        target_order=target,
                        previous_order=current,
                        last_error=None,
                    )
                changed += 1
        return changed

    def reorder_items(self, states: Iterable[str] | None = None) -> list[ReorderRow]:
        wanted = list(states) if states is not None else None
        sql = "SELECT * FROM reorder_items"
        if wanted is not None:
            sql += f" WHERE state IN ({','.join('?' * len(wanted))})"
        return [self._reorder(r) for r in self.rows(sql + " ORDER BY target_order, display_set_pk", wanted or ())]

    def reorder_patching(self, pk: str) -> bool:
        return self._transition("reorder_item", "reorder_items", "display_set_pk", pk, "patching")

    def reorder_done(self, pk: str) -> bool:
        """Done: from ``patching`` after a PATCH, or straight from ``planned`` when it already had its target."""
        return self._transition("reorder_item", "reorder_items", "display_set_pk", pk, "done", last_error=None)

    def reorder_failed(self, pk: str, reason: str) -> bool:
        with self.db.atomic():
            self.db.execute("UPDATE reorder_items SET attempts = attempts + 1 WHERE display_set_pk = ?", (pk,))
            return self._transition("reorder_item", "reorder_items", "display_set_pk", pk, "failed", last_error=reason)

    def reorder_requeued(self, pk: str, reason: str) -> bool:
        """A done item whose display set no longer has its target order (changed since): PATCH it again."""
        return self._transition("reorder_item", "reorder_items", "display_set_pk", pk, "planned", last_error=reason)

    def reorder_counts(self) -> dict[str, int]:
        return self._counts("reorder_items")

"""A ledger for the results side: the job ledger's file, lock, migrations and event log, with helpers for the
results tables (``export_run``, ``mask``, ``reorder_item`` machines). Shared by the export's and the reorder's ledgers."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Self

from gcbulk.state.ledger import Ledger, UnknownRow
from gcbulk.state.machines import MACHINES, check_transition


class LedgerExtension:
    """The shared part of the results side's ledgers: an open ``Ledger``, its transaction and event helpers."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.db = ledger.db

    def close(self) -> None:
        self.ledger.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        """One transaction around many calls (each still checked and logged): one fsync instead of one per row."""
        return self.db.atomic()

    def now(self) -> str:
        return self.ledger.now()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.ledger.rows(sql, params)

    def row(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        return self.ledger.row(sql, params)

    def _transition(self, kind: str, table: str, key_column: str, key: Any, target: str, **fields: Any) -> bool:
        """One state change of a results object, checked by the shared ``check_transition``, logged in the same
        transaction (the ledger's event writer). False for an idempotent repeat."""
        with self.db.atomic():
            row = self.row(f"SELECT * FROM {table} WHERE {key_column} = ?", (key,))
            if row is None:
                raise UnknownRow(f"the ledger has no {kind} {key!r}")
            if not check_transition(MACHINES[kind], key, row["state"], target, row, fields):
                return False
            updates = {"state": target, "updated_at": self.now(), **fields}
            assignments = ", ".join(f"{name} = ?" for name in updates)
            self.db.execute(f"UPDATE {table} SET {assignments} WHERE {key_column} = ?", (*updates.values(), key))
            self.ledger.record_event(
                f"{kind}.{target}",
                subject=kind,
                subject_id=key,
                from_state=row["state"],
                to_state=target,
                data=fields,
            )
        return True

    def _counts(self, table: str) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self.rows(f"SELECT state, count(*) AS n FROM {table} GROUP BY state")}

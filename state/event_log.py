"""The ledger's event log: every transition appends one row to ``events`` in its own transaction (see
``gcbulk.state.ledger``), and ``append_event`` adds free-form ones. A layer of the ledger over ``LedgerCore`` (see ``gcbulk.state.ledger_core``).

The ledger never holds the API token: ``record_event`` scrubs server text of it (``gcbulk/redaction.py``) and refuses
secret-looking keys.
"""

from __future__ import annotations

import json
from typing import Any

from gcbulk.redaction import redact
from gcbulk.state.ledger_core import LedgerCore

_SECRET_WORDS = ("token", "authorization", "password", "secret")


def _subject_text(subject_id: object) -> str | None:
    if subject_id is None:
        return None
    parts = subject_id if isinstance(subject_id, tuple) else (subject_id,)
    return ":".join(str(part) for part in parts)  # a part is "<upload id>:<number>"


def _reject_secrets(data: dict[str, Any]) -> None:
    for key in data:
        if any(word in key.lower() for word in _SECRET_WORDS):
            raise ValueError(f"refusing to write {key!r} to the ledger: the ledger must never hold credentials")


class LedgerEvents(LedgerCore):
    """Appending to and reading the event log."""

    def record_event(
        self,
        kind: str,
        *,
        subject: str | None = None,
        subject_id: object = None,
        case_id: int | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        # Server text (a reason, an error) is scrubbed of the token before it is stored (gcbulk/redaction.py).
        data = {k: redact(v) for k, v in (data or {}).items() if v is not None}
        _reject_secrets(data)
        self.db.execute(
            "INSERT INTO events (at, kind, subject, subject_id, case_id, from_state, to_state, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.now(),
                kind,
                subject,
                _subject_text(subject_id),
                case_id,
                from_state,
                to_state,
                json.dumps(data, sort_keys=True, default=str) if data else None,
            ),
        )

    def append_event(self, kind: str, *, case_id: int | None = None, **data: Any) -> None:
        """Append a free-form event (e.g. a progress snapshot) to the log, in its own transaction."""
        with self.db.atomic():
            self.record_event(kind, case_id=case_id, data=data)

    def events(
        self, *, after_id: int = 0, case_id: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if case_id is not None:
            sql += " AND case_id = ?"
            params.append(case_id)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self.rows(sql, params)
        for row in rows:
            row["data"] = json.loads(row["data"]) if row["data"] else {}
        return rows

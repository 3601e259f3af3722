"""Each state change the engine makes: one ledger transaction and one JSON event line.

The ledger (``state/ledger.py``) checks the transition and appends to its own event table in the same transaction;
the journal then writes the same change as a JSON line (``engine/progress.EventLog``) for people and tools that
follow a run live. An idempotent repeat (the ledger returns False) writes no line.
"""

from __future__ import annotations

from typing import Any

from engine.progress import EventLog
from state.ledger import Ledger


class Journal:
    def __init__(self, ledger: Ledger, events: EventLog) -> None:
        self.ledger = ledger
        self.events = events

    def record(self, transition: str, *args: Any, case: str | None = None, **fields: Any) -> Any:
        """Calls ``ledger.<transition>(*args, **fields)`` and, if it changed anything, emits one event line."""
        result = getattr(self.ledger, transition)(*args, **fields)
        if result is not False:
            self.events.emit(transition, case=case, key=list(args), **_printable(fields))
        return result

    def note(self, event: str, *, case: str | None = None, **fields: Any) -> None:
        """An event line that changes no state (a retry, an adoption, a progress snapshot)."""
        self.events.emit(event, case=case, **_printable(fields))


def _printable(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}

"""What a run or a check says about one case, as the Python API and the CLI hand it out."""

from __future__ import annotations

from typing import NamedTuple


class CaseResult(NamedTuple):
    """One case and why it is listed: failed (the reason the ledger holds), or sent again (what the server lost).

    A named tuple rather than a dataclass: scripts written against 0.1 unpack ``for title, reason in
    outcome.failed``; new code reads ``.title`` and ``.reason``."""

    title: str
    reason: str

"""A ledger that went back in time, noticed before it does harm.

The ledger and the event log are written together: every recorded step is a ledger transaction and a line in the
event log (``engine/upload/journal.py``). A ledger that lost its latest transactions — its ``-wal`` file deleted
after a kill -9, a copy restored from an older backup, a volume snapshot taken mid-run — no longer knows display sets
this job created, while the event log still says it created them. Unchecked, the next plan would take them for
display sets someone else made and block the job's own cases. Instead the command stops (exit 2) and says what
happened and how to recover.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gcbulk.engine.plan.titles import redacted
from gcbulk.state.errors import LedgerError

# The event that records the intent to create a display set, written before its POST (engine/upload/case_upload.py).
_CREATING = ('"event":"display_set_creating"', '"event":"display_set_created"')
# A create the server refused (its title was another job's): the intent before it created nothing.
_NOT_CREATED = '"event":"display_set_not_created"'
_SHOW = 5


class LedgerBehindEventLog(LedgerError):
    """The event log records display sets this job created that the ledger does not know: the ledger lost writes."""


def titles_the_event_log_created(events: Path, titles: Iterable[str]) -> set[str]:
    """Those of ``titles`` whose display set the event log at ``events`` says this job set out to create (by title,
    or by its hash when titles were redacted). Streams the file line by line: only its matching lines are parsed."""
    import json

    wanted = {title: title for title in titles} | {redacted(title): title for title in titles}
    if not wanted or not events.is_file():
        return set()
    found: set[str] = set()
    with open(events, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            refused = _NOT_CREATED in line
            if not refused and not any(marker in line for marker in _CREATING):
                continue
            try:
                case = json.loads(line).get("case")
            except (ValueError, AttributeError):
                continue  # a line cut short by a kill: the others still tell
            if isinstance(case, str) and case in wanted:
                if refused:  # in file order: a later refusal undoes the intent before it
                    found.discard(wanted[case])
                else:
                    found.add(wanted[case])
    return found


def check_not_behind_event_log(ledger_path: str, events: Path, foreign_titles: Iterable[str]) -> None:
    """Raises LedgerBehindEventLog when display sets the server has and the ledger calls someone else's were
    created by this job according to its event log."""
    ours = titles_the_event_log_created(events, foreign_titles)
    if not ours:
        return
    shown = ", ".join(sorted(ours)[:_SHOW]) + (f" and {len(ours) - _SHOW} more" if len(ours) > _SHOW else "")
    raise LedgerBehindEventLog(
        f"the ledger {ledger_path} is behind its event log {events}: the event log records that this job created "
        f"the display sets of {len(ours)} case(s) ({shown}) that the ledger does not know. The ledger lost its "
        "latest writes (a deleted or lost -wal file after a crash, or a restored older copy); nothing was sent. "
        "Recover: put back the ledger's -wal file (or a newer copy) if you have it; otherwise run with "
        "--adopt-existing (GCBULK_ADOPT_EXISTING=true) once, which takes those display sets back and adds only the "
        "values they lack"
    )

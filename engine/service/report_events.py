"""What the migration report reads from the run's event file (``<job>.events.jsonl``): the moments the ledger does
not keep — the server telling a run to wait (429s, the upload cap, the quota, a cap held by other workers), stop
requests and kills, each run's end, and the result of each comparison with the server (``gcbulk verify`` and the
check a run makes at its start and end).

The file grows by about twenty lines per case, so it is scanned, not parsed: read in blocks, searched by one regular
expression, only lines naming one of these events are decoded, a line longer than ``MAX_LINE_BYTES`` is skipped, and at most ``MAX_SCAN_BYTES`` are read (the report
says so when it stopped early). Waits are kept as counts per category and time bucket, never one marker per wait.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gcbulk.state.report_aggregates import parse_at

MAX_SCAN_BYTES = 4 * 1024**3
MAX_LINE_BYTES = 64 * 1024
CHUNK_BYTES = 8 * 1024 * 1024
SERVER_WAIT = "server_wait"  # the event the run writes for every wait the server imposed (engine/service/waits.py)
_WANTED = re.compile(rb'"event":\s*"(server_wait|stop_requested|stopping_now|run_finished|reconciled|worker_started)"')


@dataclass(frozen=True, kw_only=True)
class RunEnd:
    at: datetime
    interrupted: bool
    done: int
    failed: int


@dataclass(frozen=True, kw_only=True)
class Stop:
    at: datetime
    how: str  # "stop requested (SIGTERM)" or "stopped at once (SIGINT)"


@dataclass(frozen=True, kw_only=True)
class Check:
    """One comparison of the ledger with the server (``gcbulk verify``, or a run's own check at its start and end)."""

    at: datetime
    checked: int  # display sets compared
    requeued: int  # cases sent again because the server had lost their display set or a value


@dataclass(kw_only=True)
class EventFacts:
    path: Path | None
    waits: list[tuple[datetime, str]] = field(default_factory=list)  # (when, category), at most MAX_WAITS kept
    wait_counts: Counter[str] = field(default_factory=Counter)  # every wait, by category
    stops: list[Stop] = field(default_factory=list)
    run_ends: list[RunEnd] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    starts: int = 0
    lines_read: int = 0
    truncated: bool = False  # stopped at MAX_SCAN_BYTES
    missing: bool = False


MAX_WAITS = 200_000


class EventScanner:
    """Reads the event file once, then only what was appended since (the live page asks every few seconds)."""

    def __init__(self, path: Path | None, *, max_bytes: int = MAX_SCAN_BYTES) -> None:
        self.facts = EventFacts(path=path)
        self._offset = 0
        self._max_bytes = max_bytes

    def scan(self) -> EventFacts:
        facts = self.facts
        path = facts.path
        facts.missing = path is None or not path.is_file()
        if facts.missing or facts.truncated:
            return facts
        assert path is not None
        with path.open("rb") as stream:
            stream.seek(self._offset)
            rest = b""
            while chunk := stream.read(CHUNK_BYTES):
                data = rest + chunk
                cut = data.rfind(b"\n") + 1  # whole lines only: a line being written is read whole next time
                block, rest = data[:cut], data[cut:]
                if self._offset + len(block) > self._max_bytes:
                    facts.truncated = True
                    break
                self._offset += len(block)
                facts.lines_read += block.count(b"\n")
                self._take_block(block)
        return facts

    def _take_block(self, block: bytes) -> None:
        """The wanted lines of ``block`` (whole lines), found by one regex pass in C rather than a loop per line."""
        after = -1  # the end of the last line taken: a line that matches twice is taken once
        for match in _WANTED.finditer(block):
            if match.start() < after:
                continue
            start = block.rfind(b"\n", 0, match.start()) + 1
            after = block.find(b"\n", match.end())
            if after - start > MAX_LINE_BYTES:
                continue
            try:
                record = json.loads(block[start:after])
            except ValueError:  # a line cut short by a kill mid-write, the next run's line glued to it
                continue
            _take(self.facts, record)


def read_event_facts(path: Path | None, *, max_bytes: int = MAX_SCAN_BYTES) -> EventFacts:
    """The report's facts from the event file at ``path`` (None or missing: an empty record that says so)."""
    return EventScanner(path, max_bytes=max_bytes).scan()


def _take(facts: EventFacts, record: dict[str, Any]) -> None:
    at = parse_at(record.get("at"))
    if at is None:
        return
    event = record.get("event")
    if event == SERVER_WAIT:
        category = str(record.get("category", "other"))
        facts.wait_counts[category] += 1
        if len(facts.waits) < MAX_WAITS:
            facts.waits.append((at, category))
    elif event in ("stop_requested", "stopping_now"):
        signal = record.get("signal", "a signal")
        how = "stop requested" if event == "stop_requested" else "stopped at once"
        facts.stops.append(Stop(at=at, how=f"{how} ({signal})"))
    elif event == "run_finished":
        facts.run_ends.append(
            RunEnd(
                at=at,
                interrupted=bool(record.get("interrupted")),
                done=int(record.get("done", 0) or 0),
                failed=int(record.get("failed", 0) or 0),
            )
        )
    elif event == "reconciled":
        gone = int(record.get("display_sets_gone", 0) or 0) + int(record.get("values_gone", 0) or 0)
        facts.checks.append(Check(at=at, checked=int(record.get("checked", 0) or 0), requeued=gone))
    elif event == "worker_started":
        facts.starts += 1

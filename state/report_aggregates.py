"""What the picture of a migration (``gcbulk report --html``, the live ``/status`` page) needs from the ledger, as
aggregates: cases by state, failed and blocked cases grouped by reason (a page of each group), bytes and cases per
time bucket, the time each case took from its first byte to imported (a histogram), and every worker process that
ran the job (started, stopped, or killed).

Everything is read from the ledger's own tables and its append-only event log, not from a run's memory, so the
numbers are the same whether the run is alive, finished or was killed. Grouping happens once per query and the
case lists are cut to a page, so a job of 100 000 cases is read in a few scans and drawn from a few hundred numbers
(``benchmarks/report_scale.py`` measures it).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gcbulk.state.ledger import Ledger

# Each reason group shows this many of its cases; the rest are counted, and the CSV report lists them all.
CASES_PER_REASON = 25
# At most this many reason groups per state; the rest fold into one "other reasons" group.
REASON_GROUPS = 12
# About this many bars on a time chart, whatever the job's length (a chart of 100 000 cases stays a few KiB).
TIME_BUCKETS = 60
_NICE_BUCKET_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
# Upper edges (seconds) of the time-per-case histogram: roughly ×2–2.5 per bar, a last bar for everything longer.
CASE_TIME_EDGES = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)
_ATTENTION_STATES = ("failed", "blocked", "vanished")


@dataclass(frozen=True, kw_only=True)
class CaseRef:
    title: str
    folder: str
    detail: str  # the full reason of this case (the group's is the shape shared by all)


@dataclass(frozen=True, kw_only=True)
class ReasonGroup:
    state: str  # failed | blocked | vanished
    reason: str  # the shape of the reason: numbers, ids and quoted names folded, so alike reasons share a group
    count: int
    cases: tuple[CaseRef, ...]  # the first CASES_PER_REASON of them, in planning order


@dataclass(frozen=True, kw_only=True)
class TimeSeries:
    """Bytes sent (parts the server acknowledged) and cases done, per bucket of ``bucket_seconds`` from ``start``."""

    start: datetime
    bucket_seconds: int
    bytes_sent: tuple[int, ...]
    cases_done: tuple[int, ...]

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.bucket_seconds * len(self.bytes_sent))


@dataclass(frozen=True, kw_only=True)
class CaseTimes:
    """Seconds from a case's first part sent to its display set imported, for every case that got there."""

    edges: tuple[int, ...]  # upper edges; counts has one more bar (longer than the last edge)
    counts: tuple[int, ...]
    cases: int
    median: float
    p90: float
    longest: float


@dataclass(frozen=True, kw_only=True)
class WorkerRun:
    """One process that ran the job: its worker id, when it started, and how it ended."""

    worker_id: str
    started_at: datetime
    stopped_at: datetime | None  # None: never said goodbye (killed, cut off, or still running)
    last_heartbeat: datetime | None


@dataclass(frozen=True, kw_only=True)
class LedgerPicture:
    reader_study: str
    base_url: str
    plan_state: str
    planned_at: datetime | None
    cases_by_state: dict[str, int]
    files: int
    bytes_planned: int
    bytes_sent: int
    reasons: tuple[ReasonGroup, ...]
    series: TimeSeries | None
    case_times: CaseTimes | None
    workers: tuple[WorkerRun, ...]
    lost_on_server: int  # cases `gcbulk verify` (or a run's own check) found gone from the server and re-queued
    lost_on_server_last: datetime | None
    first_at: datetime | None  # the first and last transfer events: the span the time charts cover
    last_at: datetime | None
    notes: list[str] = field(default_factory=list)  # what was aggregated, paged or left out, said on the page

    @property
    def cases_total(self) -> int:
        return sum(self.cases_by_state.values())


def parse_at(text: str | None) -> datetime | None:
    """The ledger's ``at`` (ISO-8601 UTC with a ``Z``) as an aware datetime."""
    return None if not text else datetime.fromisoformat(text)  # Python 3.11 reads the "Z"


_SHAPE_RULES = (
    # Quoted names (a title, a file, a socket) are folded; quoted text with spaces is a message and tells groups apart.
    (re.compile(r"'[^'\s]*'|\"[^\"\s]*\""), "'…'"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<id>"),
    (re.compile(r"\d+(\.\d+)?"), "N"),
)


def reason_shape(reason: str) -> str:
    """What alike reasons share: ids, numbers and quoted names folded, cut to one line."""
    text = reason.strip().splitlines()[0] if reason.strip() else "no reason recorded"
    for pattern, replacement in _SHAPE_RULES:
        text = pattern.sub(replacement, text)
    return text[:160]


def _blocked_reason(findings_json: str | None) -> str:
    findings = json.loads(findings_json) if findings_json else []
    blocking = [f for f in findings if f.get("severity") == "blocking"] or findings
    if not blocking:
        return "blocked by the plan (no finding recorded)"
    first = blocking[0]
    return f"{first.get('code', 'finding')}: {first.get('message', '')}".strip()


def reason_groups(ledger: Ledger) -> tuple[ReasonGroup, ...]:
    """Failed, blocked and vanished cases, grouped by the shape of their reason, biggest group first; each group
    keeps a page of its cases. One pass over those cases (an index on state), flat memory per group."""
    counts: Counter[tuple[str, str]] = Counter()
    pages: dict[tuple[str, str], list[CaseRef]] = {}
    # The states are this module's constants, written into the statement: no placeholder style to translate for
    # PostgreSQL.
    states = ", ".join(f"'{state}'" for state in _ATTENTION_STATES)
    cursor = ledger.db.conn.execute(
        f"SELECT state, title, folder, last_error, findings FROM cases WHERE state IN ({states}) ORDER BY id"
    )
    for state, title, folder, last_error, findings in cursor:
        if state == "blocked":
            detail = _blocked_reason(findings)
        elif state == "vanished":
            detail = last_error or "its folder is gone from the case tree"
        else:
            detail = last_error or "failed (no reason recorded)"
        key = (state, reason_shape(detail))
        counts[key] += 1
        page = pages.setdefault(key, [])
        if len(page) < CASES_PER_REASON:
            page.append(CaseRef(title=title, folder=folder, detail=detail))
    groups: list[ReasonGroup] = []
    for state in _ATTENTION_STATES:
        ranked = sorted(((n, key) for key, n in counts.items() if key[0] == state), key=lambda nk: (-nk[0], nk[1]))
        for n, key in ranked[:REASON_GROUPS]:
            groups.append(ReasonGroup(state=state, reason=key[1], count=n, cases=tuple(pages[key])))
        rest = ranked[REASON_GROUPS:]
        if rest:
            folded = [case for _, key in rest for case in pages[key]][:CASES_PER_REASON]
            groups.append(
                ReasonGroup(
                    state=state,
                    reason=f"{len(rest)} other reasons",
                    count=sum(n for n, _ in rest),
                    cases=tuple(folded),
                )
            )
    return tuple(groups)


def bucket_seconds_for(span_seconds: float, buckets: int = TIME_BUCKETS) -> int:
    """The smallest round bucket width that covers ``span_seconds`` in about ``buckets`` bars."""
    for width in _NICE_BUCKET_SECONDS:
        if span_seconds / width <= buckets:
            return width
    return int(span_seconds // buckets) + 1


def time_series(
    parts: Sequence[tuple[datetime, int]], done: Sequence[datetime], buckets: int = TIME_BUCKETS
) -> TimeSeries | None:
    """``parts`` (when, bytes) and ``done`` (when) counted into round time buckets."""
    moments = [at for at, _ in parts] + list(done)
    if not moments:
        return None
    start, end = min(moments), max(moments)
    width = bucket_seconds_for((end - start).total_seconds(), buckets)
    start = datetime.fromtimestamp(start.timestamp() // width * width, start.tzinfo)
    count = int((end - start).total_seconds() // width) + 1
    sent = [0] * count
    cases = [0] * count
    for at, size in parts:
        sent[int((at - start).total_seconds() // width)] += size
    for at in done:
        cases[int((at - start).total_seconds() // width)] += 1
    return TimeSeries(start=start, bucket_seconds=width, bytes_sent=tuple(sent), cases_done=tuple(cases))


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def case_times(seconds: Iterable[float], edges: tuple[int, ...] = CASE_TIME_EDGES) -> CaseTimes | None:
    ordered = sorted(seconds)
    if not ordered:
        return None
    counts = [0] * (len(edges) + 1)
    bar = 0
    for value in ordered:  # sorted, so the bar only moves right
        while bar < len(edges) and value > edges[bar]:
            bar += 1
        counts[bar] += 1
    return CaseTimes(
        edges=edges,
        counts=tuple(counts),
        cases=len(ordered),
        median=_quantile(ordered, 0.5),
        p90=_quantile(ordered, 0.9),
        longest=ordered[-1],
    )


# One scan of the event log, grouped per case: ISO-8601 UTC strings of one format sort as the moments they name, so
# min and max work on the text, in SQLite and PostgreSQL alike, and 100 000 cases come back as 100 000 rows rather
# than the two million events behind them.
_PER_CASE_SQL = """
SELECT case_id,
       min(CASE WHEN kind = 'part.sent' THEN at END) AS first_byte,
       max(CASE WHEN kind = 'display_set.done' THEN at END) AS imported,
       max(CASE WHEN kind = 'case.done' THEN at END) AS done,
       sum(CASE WHEN kind = 'case.lost_on_server' THEN 1 ELSE 0 END) AS lost,
       max(CASE WHEN kind = 'case.lost_on_server' THEN at END) AS lost_at
FROM events
WHERE kind IN ('part.sent', 'display_set.done', 'case.done', 'case.lost_on_server') AND case_id IS NOT NULL
GROUP BY case_id
"""
# Bytes over time from the parts the server kept, grouped by the first ``n`` characters of ``sent_at``: by the second
# for a short job, by the minute once a bucket is a minute or more (every round bucket from a minute up is a whole
# number of minutes), so a three-day job is a few thousand groups.
_PARTS_SPAN_SQL = "SELECT min(sent_at), max(sent_at), count(*) FROM parts WHERE state = 'sent' AND sent_at IS NOT NULL"
_PARTS_BY_PREFIX_SQL = (
    "SELECT substr(sent_at, 1, {n}) AS moment, sum(size) FROM parts WHERE state = 'sent' AND sent_at IS NOT NULL "
    "GROUP BY substr(sent_at, 1, {n})"
)


@dataclass(frozen=True, kw_only=True)
class _Transfer:
    sent: list[tuple[datetime, int]]  # (moment, bytes) groups
    parts: int
    done: list[datetime]
    durations: list[float]
    lost: int
    lost_at: datetime | None
    first_sent: datetime | None  # exact, where ``sent`` is grouped
    last_sent: datetime | None


def _transfer(ledger: Ledger) -> _Transfer:
    """Part bytes over time, case completions over time, each case's first byte → imported seconds, and the cases
    the server lost."""
    done: list[datetime] = []
    durations: list[float] = []
    lost, lost_at = 0, None
    for _, first_text, imported_text, done_text, lost_count, lost_text in ledger.db.conn.execute(_PER_CASE_SQL):
        if done_text is not None:
            done.append(datetime.fromisoformat(done_text))
        if first_text is not None and imported_text is not None and imported_text >= first_text:
            first, imported = datetime.fromisoformat(first_text), datetime.fromisoformat(imported_text)
            durations.append((imported - first).total_seconds())
        if lost_count:
            lost += lost_count
            lost_at = max(lost_at or lost_text, lost_text)
    low, high, parts = ledger.db.conn.execute(_PARTS_SPAN_SQL).fetchone()
    sent: list[tuple[datetime, int]] = []
    if parts:
        span = (datetime.fromisoformat(high) - datetime.fromisoformat(low)).total_seconds()
        prefix = 16 if bucket_seconds_for(span) >= 60 else 19
        for moment, size in ledger.db.conn.execute(_PARTS_BY_PREFIX_SQL.format(n=prefix)):
            sent.append((datetime.fromisoformat(moment + (":00" if prefix == 16 else "")).replace(tzinfo=UTC), size))
    return _Transfer(
        sent=sent,
        parts=parts,
        done=done,
        durations=durations,
        lost=lost,
        lost_at=parse_at(lost_at),
        first_sent=parse_at(low),
        last_sent=parse_at(high),
    )


def _workers(ledger: Ledger) -> tuple[WorkerRun, ...]:
    runs = []
    for worker_id, started, stopped, heartbeat in ledger.db.conn.execute(
        "SELECT worker_id, started_at, stopped_at, heartbeat_at FROM workers ORDER BY started_at, worker_id"
    ):
        started_at = parse_at(started)
        assert started_at is not None
        runs.append(
            WorkerRun(
                worker_id=worker_id,
                started_at=started_at,
                stopped_at=parse_at(stopped),
                last_heartbeat=datetime.fromtimestamp(heartbeat, UTC) if heartbeat else None,
            )
        )
    return tuple(runs)


def _scalar(ledger: Ledger, sql: str, params: Sequence[Any] = ()) -> Any:
    row = ledger.db.conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def ledger_picture(ledger: Ledger) -> LedgerPicture:
    """The whole picture of a job from its ledger (see the module docstring). Read-only; runs on the ledger's thread."""
    job = ledger.job or {}
    cases_by_state = dict(ledger.db.conn.execute("SELECT state, count(*) FROM cases GROUP BY state").fetchall())
    files, bytes_planned = ledger.db.conn.execute(
        "SELECT count(files.id), coalesce(sum(files.size), 0) FROM files JOIN items ON items.id = files.item_id "
        "WHERE items.state != 'withdrawn' AND files.present = 1"
    ).fetchone()
    bytes_sent = _scalar(ledger, "SELECT coalesce(sum(size), 0) FROM parts WHERE state = 'sent'")
    transfer = _transfer(ledger)
    series = time_series(transfer.sent, transfer.done)
    moments = [at for at in (transfer.first_sent, transfer.last_sent) if at is not None] + transfer.done
    notes = [
        f"Time charts: {transfer.parts:,} parts kept by the server and {len(transfer.done):,} finished cases counted "
        f"into {series.bucket_seconds}-second buckets."
        if series
        else "Time charts: nothing was sent yet."
    ]
    return LedgerPicture(
        reader_study=job.get("reader_study", ""),
        base_url=job.get("base_url", ""),
        plan_state=job.get("state", "empty"),
        planned_at=parse_at(job.get("plan_finished_at")),
        cases_by_state=cases_by_state,
        files=files,
        bytes_planned=bytes_planned,
        bytes_sent=bytes_sent,
        reasons=reason_groups(ledger),
        series=series,
        case_times=case_times(transfer.durations),
        workers=_workers(ledger),
        lost_on_server=transfer.lost,
        lost_on_server_last=transfer.lost_at,
        first_at=min(moments) if moments else None,
        last_at=max(moments) if moments else None,
        notes=notes,
    )

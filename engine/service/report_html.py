"""The picture of a migration as one self-contained HTML page: ``gcbulk report JOB --html OUT.html`` writes it, and
the follow-mode server shows the same page live at ``/status`` (``engine/service/status_page.py``).

One file, no script, no network: inline CSS and SVG (``engine/service/report_svg.py``), so it opens offline, prints,
and can be mailed to a study's owner or an ethics board. It answers, top to bottom: how did it go and what is left
(a headline and one bar of cases by state), how fast (bytes and cases over time, with the server's waits and each
run's start, stop and kill on the same time line), how long a case took (a histogram), what needs a person (failed,
blocked and vanished cases grouped by reason, a page of each), and which runs and checks happened. Titles follow
``--redact-titles``; the API token cannot appear (no field here holds one, and reasons pass the redactor).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

from gcbulk.engine.gc.target_ref import TargetRef
from gcbulk.engine.plan.titles import redacted, scrub
from gcbulk.engine.service.report_events import EventFacts
from gcbulk.engine.service.report_format import CSS, human_bytes, human_duration, when
from gcbulk.engine.service.report_svg import Marker, Segment, histogram, stacked_bar, time_bars
from gcbulk.engine.service.waits import CATEGORY_TEXT
from gcbulk.redaction import redact_text as redact_secrets
from gcbulk.state.report_aggregates import CaseRef, LedgerPicture, ReasonGroup

STATE_COLORS = {
    "done": "#16a34a",
    "running": "#2563eb",
    "planned": "#9ca3af",
    "failed": "#dc2626",
    "blocked": "#d97706",
    "vanished": "#7c3aed",
}
_STATE_ORDER = ("done", "running", "planned", "failed", "blocked", "vanished")
_STATE_WORDS = {
    "done": "done (imported on Grand Challenge)",
    "running": "in progress",
    "planned": "not started yet",
    "failed": "failed",
    "blocked": "blocked by the plan's checks",
    "vanished": "vanished from the case tree",
}
_WAIT_COLORS = ("#f59e0b", "#ef4444", "#8b5cf6", "#0ea5e9", "#64748b", "#ec4899")


@dataclass(frozen=True, kw_only=True)
class LiveNow:
    """What only a running process knows, for the live page: its phase, rate, ETA and why it is waiting now."""

    phase: str
    worker_id: str
    bytes_per_second: float
    eta_seconds: float | None
    files_in_flight: int
    parts_in_flight: int
    waits: tuple[str, ...]  # the reasons it waits now, in words ("quota exhausted", "server slow: limit 3 in flight")
    refresh_seconds: int


class _Names:
    """Titles, folders and reasons as the page shows them: escaped, hashed when titles are redacted."""

    def __init__(self, redact: bool) -> None:
        self.redact = redact

    def case(self, case: CaseRef) -> tuple[str, str, str]:
        detail = redact_secrets(case.detail)
        if self.redact:
            return redacted(case.title), redacted(case.folder), scrub(detail, case.title, case.folder) or ""
        return case.title, case.folder, detail


def _verdict(picture: LedgerPicture) -> tuple[str, str, str]:
    """(css class, headline, what is left) — the sentence a person reads first."""
    states = picture.cases_by_state
    total = picture.cases_total
    done = states.get("done", 0)
    attention = sum(states.get(s, 0) for s in ("failed", "blocked", "vanished"))
    open_ = states.get("planned", 0) + states.get("running", 0)
    if total == 0:
        return "idle", "Nothing planned yet", "Run gcbulk plan or gcbulk run on the job."
    share = f"{done:,} of {total:,} cases are on Grand Challenge ({100 * done / total:.1f} %)"
    left = []
    if open_:
        left.append(f"{open_:,} still to send")
    if attention:
        left.append(f"{attention:,} need a person (see “What needs attention”)")
    if not left:
        return "good", f"Complete: {share}", "Nothing is left to do."
    css = "bad" if attention else "busy"
    return css, share, "Left: " + "; ".join(left) + "."


def _tiles(picture: LedgerPicture) -> str:
    elapsed = (picture.last_at - picture.first_at).total_seconds() if picture.first_at and picture.last_at else None
    rate = picture.bytes_sent / elapsed if elapsed else None
    times = picture.case_times
    tiles = [
        ("Cases done", f"{picture.cases_by_state.get('done', 0):,}", f"of {picture.cases_total:,} planned"),
        ("Data sent", human_bytes(picture.bytes_sent), f"of {human_bytes(picture.bytes_planned)} planned"),
        ("Transfer span", human_duration(elapsed), "first byte to last event"),
        ("Average rate", "—" if rate is None else f"{human_bytes(rate)}/s", "over the transfer span"),
        (
            "Time per case",
            "—" if times is None else human_duration(times.median),
            "median, first byte to imported" if times else "no case imported yet",
        ),
    ]
    return "".join(
        f'<div class="tile"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div>'
        f'<div class="s">{escape(s)}</div></div>'
        for k, v, s in tiles
    )


def _state_section(picture: LedgerPicture) -> str:
    states = picture.cases_by_state
    ordered = [s for s in _STATE_ORDER if states.get(s)] + sorted(s for s in states if s not in _STATE_ORDER)
    segments = [Segment(s, states[s], STATE_COLORS.get(s, "#6b7280")) for s in ordered]
    legend = "".join(
        f'<li><span class="sw" style="background:{STATE_COLORS.get(s, "#6b7280")}"></span>'
        f"<b>{states[s]:,}</b> {escape(_STATE_WORDS.get(s) or s)}</li>"
        for s in ordered
    )
    return f'{stacked_bar(segments)}<ul class="legend">{legend}</ul>'


def _wait_markers(facts: EventFacts, bucket_seconds: int, lane: int) -> tuple[list[Marker], list[str]]:
    """One marker per (category, time bucket) with its count: thousands of 429s stay a handful of shapes."""
    buckets: Counter[tuple[str, int]] = Counter()
    for at, category in facts.waits:
        buckets[(category, int(at.timestamp() // bucket_seconds))] += 1
    categories = sorted(facts.wait_counts, key=lambda c: -facts.wait_counts[c])
    colors = {c: _WAIT_COLORS[i % len(_WAIT_COLORS)] for i, c in enumerate(categories)}
    markers = [
        Marker(
            at=datetime.fromtimestamp(bucket * bucket_seconds, UTC),
            label=f"{count:,}× {CATEGORY_TEXT.get(category, category)}",
            color=colors[category],
            lane=lane,
        )
        for (category, bucket), count in sorted(buckets.items(), key=lambda kv: kv[0][1])
    ]
    legend = [
        f'<li><span class="sw" style="background:{colors[c]}"></span><b>{facts.wait_counts[c]:,}</b> '
        f"{escape(CATEGORY_TEXT.get(c, c))}</li>"
        for c in categories
    ]
    return markers, legend


def _run_markers(picture: LedgerPicture, facts: EventFacts, now: datetime) -> list[Marker]:
    """Each run as a span from its start to its end: green when it said goodbye, red when it was killed or cut off
    (its last heartbeat), blue while it runs; stop requests as amber moments."""
    markers = []
    for run in picture.workers:
        if run.stopped_at is not None:
            until, color, how = run.stopped_at, "#16a34a", "ended"
        elif _is_live(run.last_heartbeat, now):
            until, color, how = now, "#2563eb", "running"
        else:
            until, color, how = run.last_heartbeat or run.started_at, "#dc2626", "killed or cut off"
        label = f"run {run.worker_id}: {how} ({human_duration((until - run.started_at).total_seconds())})"
        markers.append(Marker(at=run.started_at, until=until, label=label, color=color, lane=0))
    for stop in facts.stops:
        markers.append(Marker(at=stop.at, label=stop.how, color="#d97706", lane=0))
    return markers


def _is_live(heartbeat: datetime | None, now: datetime) -> bool:
    return heartbeat is not None and now - heartbeat < timedelta(seconds=90)


def _time_section(picture: LedgerPicture, facts: EventFacts, now: datetime) -> str:
    series = picture.series
    if series is None:
        return '<p class="muted">Nothing has been sent yet: the time line starts with the first part.</p>'
    wait_markers, wait_legend = _wait_markers(facts, series.bucket_seconds, lane=1)
    per_second = [b / series.bucket_seconds for b in series.bytes_sent]
    unit, scale = _rate_unit(max(per_second, default=0))
    chart = time_bars(
        [value / scale for value in per_second],
        start=series.start,
        bucket_seconds=series.bucket_seconds,
        unit=unit,
        color="#60a5fa",
        line=list(_cumulative(series.cases_done)),
        line_label="cases done",
        markers=[*_run_markers(picture, facts, now), *wait_markers],
        lanes=("runs", "server said wait"),
    )
    waits = (
        f'<ul class="legend">{"".join(wait_legend)}</ul>'
        if wait_legend
        else '<p class="muted">The server never asked this job to wait (no 429, upload cap or quota wait).</p>'
    )
    return (
        f'{chart}<p class="muted">Bars: upload rate per {human_duration(series.bucket_seconds)} (left axis). Line: '
        "cases done so far (right axis). Runs: each process from its start to its end, green when it ended, red "
        "when it was killed or cut off, blue while it runs; amber marks a stop request. Below them: the server's "
        f"waits by kind (hover for counts).</p>{waits}"
    )


def _rate_unit(highest: float) -> tuple[str, float]:
    """The unit that puts the fastest bucket between 1 and 1024: an axis of 0–50 KiB/s, not of 0–5e-05 MiB/s."""
    for unit, scale in (("GiB/s", 1024.0**3), ("MiB/s", 1024.0**2), ("KiB/s", 1024.0)):
        if highest >= scale:
            return unit, scale
    return "B/s", 1.0


def _cumulative(values: Iterable[int]) -> Iterable[int]:
    total = 0
    for value in values:
        total += value
        yield total


def _case_time_section(picture: LedgerPicture) -> str:
    times = picture.case_times
    if times is None:
        return '<p class="muted">No case has been imported yet.</p>'
    labels = [f"≤{human_duration(edge)}" for edge in times.edges] + [f">{human_duration(times.edges[-1])}"]
    # Only the span that holds cases, so a job of minutes is not drawn on an axis of days.
    used = [i for i, c in enumerate(times.counts) if c]
    low, high = used[0], used[-1] + 1
    chart = histogram(labels[low:high], times.counts[low:high], color="#34d399", unit="cases")
    return (
        f'{chart}<p class="muted">{times.cases:,} cases, from their first byte sent to their display set imported: '
        f"median {human_duration(times.median)}, 90 % within {human_duration(times.p90)}, longest "
        f"{human_duration(times.longest)}.</p>"
    )


def _group_html(group: ReasonGroup, names: _Names) -> str:
    rows = "".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>".format(*(escape(v) for v in names.case(case)))
        for case in group.cases
    )
    more = (
        f'<p class="muted">… and {group.count - len(group.cases):,} more: '
        "<code>gcbulk report JOB --format csv</code> lists every case.</p>"
        if group.count > len(group.cases)
        else ""
    )
    reason = redact_secrets(group.reason)
    return (
        f'<div class="group {escape(group.state)}"><h3><span class="n">{group.count:,}</span> {escape(group.state)}: '
        f"{escape(reason)}</h3><table><thead><tr><th>case</th><th>folder</th><th>reason</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{more}</div>"
    )


def _attention_section(picture: LedgerPicture, names: _Names) -> str:
    if not picture.reasons:
        return '<p class="good-text">No case failed, is blocked or vanished.</p>'
    return "".join(_group_html(group, names) for group in picture.reasons)


def _runs_section(picture: LedgerPicture, facts: EventFacts, now: datetime) -> str:
    rows = []
    for run in picture.workers:
        if run.stopped_at is not None:
            how = "ended"
        elif _is_live(run.last_heartbeat, now):
            how = "running"
        else:
            how = "killed or cut off (no goodbye: what it had recorded is kept, nothing is sent twice)"
        rows.append(
            f"<tr><td>{escape(run.worker_id)}</td><td>{when(run.started_at)}</td>"
            f"<td>{when(run.stopped_at or run.last_heartbeat)}</td><td>{escape(how)}</td></tr>"
        )
    runs = (
        "<table><thead><tr><th>run (worker)</th><th>started</th><th>last seen</th><th>how it ended</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else '<p class="muted">No run has started yet.</p>'
    )
    return f"<p>{escape(_runs_summary(picture, now))}</p>{runs}{_verify_html(picture, facts)}"


def _runs_summary(picture: LedgerPicture, now: datetime) -> str:
    """``3 runs; 1 killed or cut off and resumed by a later run.`` — resumed only when a later run started."""
    runs = picture.workers
    killed = [run for run in runs if run.stopped_at is None and not _is_live(run.last_heartbeat, now)]
    count = f"{len(runs):,} run{'' if len(runs) == 1 else 's'}"
    if not killed:
        return f"{count}; none was killed or cut off."
    resumed = sum(1 for run in killed if any(later.started_at > run.started_at for later in runs))
    parts = []
    if resumed:
        parts.append(f"{resumed:,} killed or cut off and resumed by a later run")
    if len(killed) > resumed:
        parts.append(f"{len(killed) - resumed:,} killed or cut off and not resumed yet (run the job again)")
    return f"{count}; " + "; ".join(parts) + "."


def _verify_html(picture: LedgerPicture, facts: EventFacts) -> str:
    if facts.checks:
        last = facts.checks[-1]
        result = (
            "the server held everything the ledger says it does"
            if last.requeued == 0
            else f"{last.requeued:,} case(s) were gone from the server and were sent again"
        )
        text = f"Last comparison with the server ({when(last.at)}): {last.checked:,} display sets checked; {result}."
    elif facts.missing:
        text = "No event file, so no comparison with the server is on record; run gcbulk verify JOB to check."
    else:
        text = "No comparison with the server is on record yet; run gcbulk verify JOB to check."
    if picture.lost_on_server:
        text += (
            f" In all, {picture.lost_on_server:,} time(s) a case was found gone from the server and re-queued "
            f"(last {when(picture.lost_on_server_last)})."
        )
    return f'<p class="verify"><b>Verify:</b> {escape(text)}</p>'


def _live_section(live: LiveNow) -> str:
    waits = (
        "".join(f"<li>{escape(w)}</li>" for w in live.waits)
        if live.waits
        else "<li>nothing: the server is not holding this run back</li>"
    )
    eta = "—" if live.eta_seconds is None else human_duration(live.eta_seconds)
    return (
        f'<section class="live"><h2>Now <span class="phase">{escape(live.phase)}</span></h2>'
        f'<div class="tiles"><div class="tile"><div class="k">Rate</div><div class="v">'
        f'{escape(human_bytes(live.bytes_per_second))}/s</div><div class="s">recent window</div></div>'
        f'<div class="tile"><div class="k">ETA</div><div class="v">{escape(eta)}</div><div class="s">this pass</div>'
        f'</div><div class="tile"><div class="k">In flight</div><div class="v">{live.files_in_flight} files</div>'
        f'<div class="s">{live.parts_in_flight} parts</div></div></div>'
        f"<h3>Waiting for</h3><ul>{waits}</ul>"
        f'<p class="muted">Worker {escape(live.worker_id)} · this page refreshes every {live.refresh_seconds} s.'
        "</p></section>"
    )


def _notes(picture: LedgerPicture, facts: EventFacts) -> Sequence[str]:
    notes = list(picture.notes)
    paged = [g for g in picture.reasons if g.count > len(g.cases)]
    if paged:
        notes.append(
            f"Case lists: each reason shows its first {max(len(g.cases) for g in paged)} cases; "
            "the CSV report (gcbulk report JOB --format csv) lists all."
        )
    if picture.case_times:
        notes.append(f"Time per case: all {picture.case_times.cases:,} imported cases, counted into bars.")
    if facts.missing:
        notes.append("No event file was found: server waits, stop requests and checks are not shown.")
    elif facts.truncated:
        notes.append(f"The event file is larger than the report reads; its first {facts.lines_read:,} lines were used.")
    else:
        notes.append(f"Event file: {facts.lines_read:,} lines scanned.")
    return notes


def render_page(
    picture: LedgerPicture,
    facts: EventFacts,
    *,
    redact: bool,
    generated_at: datetime,
    version: str,
    live: LiveNow | None = None,
) -> str:
    """The whole page as one string (see the module docstring)."""
    css, headline, left = _verdict(picture)
    names = _Names(redact)
    refresh = f'<meta http-equiv="refresh" content="{live.refresh_seconds}">' if live else ""
    target = TargetRef.from_ledger_key(picture.reader_study).label  # the ledger's column names the archive too
    title = f"gcbulk: migration to {target}"
    notes = "".join(f"<li>{escape(n)}</li>" for n in _notes(picture, facts))
    sections = [
        ("Cases by state", _state_section(picture)),
        ("Over time", _time_section(picture, facts, generated_at)),
        ("Time per case", _case_time_section(picture)),
        ("What needs attention", _attention_section(picture, names)),
        ("Runs, kills and checks", _runs_section(picture, facts, generated_at)),
    ]
    body = "".join(f"<section><h2>{escape(h)}</h2>{content}</section>" for h, content in sections)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{refresh}'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
        f'<header class="{css}"><div class="eyebrow">gcbulk · {escape(target)} · '
        f'{escape(picture.base_url)}</div><h1>{escape(headline)}</h1><p class="left">{escape(left)}</p></header>'
        f'<div class="tiles">{_tiles(picture)}</div>'
        f"{_live_section(live) if live else ''}{body}"
        f"<footer><ul>{notes}</ul><p>Made by gcbulk {escape(version)} at {when(generated_at)} from the job's ledger "
        f"and event file. Plan: {escape(picture.plan_state)}, recorded {when(picture.planned_at)}.</p></footer>"
        "</main></body></html>\n"
    )

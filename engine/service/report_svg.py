"""Small inline SVG charts for the migration report: a stacked bar, a bar chart over time with markers, a histogram.

Hand-written rather than a vendored chart library: the page must work offline and print, with no script at all
(the live page refreshes itself, and a script-free page has no console errors to chase), and these three shapes are
a few dozen lines each. Every chart scales to its container through ``viewBox``; every label passes ``html.escape``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

WIDTH = 960  # the viewBox width; the page scales it to the column
_AXIS = "#6b7280"
_GRID = "#e5e7eb"


@dataclass(frozen=True)
class Segment:
    label: str
    value: int
    color: str


@dataclass(frozen=True)
class Marker:
    """A moment on a time chart: a run started, a run was killed, the server said wait."""

    at: datetime
    label: str
    color: str
    lane: int = 0  # markers of one kind share a lane under the bars
    until: datetime | None = None  # a span (a run from its start to its end) rather than a moment


def _text(x: float, y: float, body: str, *, anchor: str = "start", size: int = 12, color: str = _AXIS) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{color}" text-anchor="{anchor}">{escape(body)}</text>'
    )


def stacked_bar(segments: Sequence[Segment], *, height: int = 36) -> str:
    """One bar split by share, each part titled with its label and count (a tooltip on screen)."""
    total = sum(s.value for s in segments)
    parts = []
    x = 0.0
    for segment in segments:
        if segment.value <= 0 or total == 0:
            continue
        width = WIDTH * segment.value / total
        parts.append(
            f'<rect x="{x:.2f}" y="0" width="{max(width, 1.5):.2f}" height="{height}" fill="{segment.color}">'
            f"<title>{escape(segment.label)}: {segment.value:,}</title></rect>"
        )
        x += width
    if not parts:
        parts.append(f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="{_GRID}"/>')
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="cases by state" '
        f'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above ``value``: an axis top a person can read."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude * (1 + 1e-9):
            return step * magnitude
    return 10 * magnitude


def _clock(moment: datetime, span: timedelta) -> str:
    if span >= timedelta(days=2):
        return moment.strftime("%d %b %H:%M")
    if span >= timedelta(minutes=10):
        return moment.strftime("%H:%M")
    return moment.strftime("%H:%M:%S")


def time_bars(
    values: Sequence[float],
    *,
    start: datetime,
    bucket_seconds: int,
    unit: str,
    color: str,
    line: Sequence[float] = (),
    line_label: str = "",
    line_color: str = "#111827",
    markers: Sequence[Marker] = (),
    lanes: Sequence[str] = (),
    height: int = 260,
) -> str:
    """Bars per time bucket (``values`` in ``unit``), an optional line on its own scale (``line``, e.g. cases done),
    and marker lanes under the bars (``lanes`` names them: runs, server waits)."""
    left, right, top = 116, 48 if line else 16, 12
    lane_height = 18
    plot_bottom = height - 28 - lane_height * len(lanes)
    plot_height = plot_bottom - top
    count = max(len(values), 1)
    span = timedelta(seconds=bucket_seconds * count)
    step = (WIDTH - left - right) / count
    ceiling = _nice_ceiling(max(values, default=0))
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(unit)} over time" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        y = plot_bottom - plot_height * fraction
        out.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>')
        out.append(_text(left - 6, y + 4, _short(ceiling * fraction), anchor="end", size=11))
    out.append(_text(4, top + 4, unit, size=11))
    for i, value in enumerate(values):
        if value <= 0:
            continue
        bar = plot_height * value / ceiling
        moment = start + timedelta(seconds=bucket_seconds * i)
        out.append(
            f'<rect x="{left + i * step + step * 0.08:.2f}" y="{plot_bottom - bar:.2f}" width="{step * 0.84:.2f}" '
            f'height="{bar:.2f}" fill="{color}"><title>{escape(_clock(moment, span))}: {_short(value)} '
            f"{escape(unit)}</title></rect>"
        )
    if line:
        line_ceiling = _nice_ceiling(max(line, default=0))
        points = " ".join(
            f"{left + (i + 0.5) * step:.1f},{plot_bottom - plot_height * v / line_ceiling:.1f}"
            for i, v in enumerate(line)
        )
        out.append(f'<polyline points="{points}" fill="none" stroke="{line_color}" stroke-width="2"/>')
        out.append(_text(WIDTH - right + 6, top + 4, _short(line_ceiling), size=11, color=line_color))
        out.append(f"<title>{escape(line_label)}</title>")
    for i in range(0, count + 1, max(count // 6, 1)):
        x = left + i * step
        moment = start + timedelta(seconds=bucket_seconds * i)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{plot_bottom}" y2="{plot_bottom + 4}" stroke="{_AXIS}"/>')
        out.append(_text(x, plot_bottom + 16, _clock(moment, span), anchor="middle", size=11))
    seconds_wide = bucket_seconds * count
    for lane, name in enumerate(lanes):
        y = plot_bottom + 24 + lane * lane_height
        out.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{y + 6}" y2="{y + 6}" stroke="{_GRID}"/>')
        out.append(_text(left - 6, y + 10, name, anchor="end", size=11))

    def x_of(moment: datetime) -> float:
        offset = (moment - start).total_seconds() / seconds_wide if seconds_wide else 0
        return left + min(max(offset, 0.0), 1.0) * (WIDTH - left - right)

    for marker in markers:
        x = x_of(marker.at)
        y = plot_bottom + 24 + marker.lane * lane_height
        title = f"<title>{escape(_clock(marker.at, span))} {escape(marker.label)}</title>"
        if marker.until is not None:  # a span, with a cap at its end in the marker's colour
            end = max(x_of(marker.until), x + 3)
            out.append(
                f'<rect x="{x:.1f}" y="{y + 2}" width="{end - x:.1f}" height="8" rx="2" fill="{marker.color}" '
                f'fill-opacity="0.35">{title}</rect>'
            )
            x = end
        out.append(f'<rect x="{x - 2:.1f}" y="{y}" width="4" height="12" rx="1" fill="{marker.color}">{title}</rect>')
    out.append("</svg>")
    return "".join(out)


def histogram(labels: Sequence[str], counts: Sequence[int], *, color: str, unit: str, height: int = 200) -> str:
    """Vertical bars with a label under each and its count above it."""
    top, bottom = 20, 36
    plot_height = height - top - bottom
    step = min((WIDTH - 32) / max(len(counts), 1), WIDTH / 8)
    left = (WIDTH - step * len(counts)) / 2  # a few bars stand in the middle, not stretched across the page
    ceiling = max(counts, default=0) or 1
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(unit)}" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    out.append(
        f'<line x1="{left:.1f}" x2="{left + step * len(counts):.1f}" y1="{top + plot_height}" '
        f'y2="{top + plot_height}" stroke="{_AXIS}"/>'
    )
    for i, (label, count) in enumerate(zip(labels, counts, strict=True)):
        x = left + i * step
        bar = plot_height * count / ceiling
        if count:
            out.append(
                f'<rect x="{x + step * 0.1:.1f}" y="{top + plot_height - bar:.1f}" width="{step * 0.8:.1f}" '
                f'height="{bar:.1f}" rx="2" fill="{color}"><title>{escape(label)}: {count:,} {escape(unit)}'
                "</title></rect>"
            )
            out.append(_text(x + step / 2, top + plot_height - bar - 4, f"{count:,}", anchor="middle", size=11))
        out.append(_text(x + step / 2, top + plot_height + 16, label, anchor="middle", size=11))
    out.append("</svg>")
    return "".join(out)


def _short(value: float) -> str:
    """1234 → 1.2k, 3_500_000 → 3.5M, 0.25 → 0.25: axis labels that fit."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}".rstrip("0").rstrip(".") + suffix
    if value == int(value):
        return f"{int(value)}"
    return f"{value:.3g}"

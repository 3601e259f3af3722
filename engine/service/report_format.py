"""How the migration report (``engine/service/report_html.py``) writes numbers, moments and its look: sizes in
binary units, durations in words a person reads at a glance, UTC moments, and the page's one stylesheet (inline:
the page loads nothing from elsewhere; printable: colours kept, sections not split across pages)."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version


def gcbulk_version() -> str:
    try:
        return version("gcbulk")
    except PackageNotFoundError:
        return "unknown"


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    """``37 s``, ``2 min 05 s``, ``1 min``, ``3 h 20 min``, ``2 d 23 h``."""
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    return f"{secs} s"


def when(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


CSS = """
:root{--ink:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1040px;margin:0 auto;padding:24px}
header{border-radius:12px;padding:20px 24px;color:#fff;background:#475569}
header.good{background:linear-gradient(135deg,#15803d,#16a34a)}header.busy{background:linear-gradient(135deg,#1d4ed8,#2563eb)}
header.bad{background:linear-gradient(135deg,#b45309,#d97706)}
.eyebrow{opacity:.85;font-size:13px}h1{margin:6px 0 4px;font-size:26px}.left{margin:0;font-size:16px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin:16px 0}
.tile{background:#fff;border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.tile .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.tile .v{font-size:22px;font-weight:650;margin:2px 0}.tile .s{color:var(--muted);font-size:12px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:16px 0;
break-inside:avoid}
h2{font-size:18px;margin:0 0 12px}h3{font-size:15px;margin:14px 0 6px}
.chart{width:100%;height:auto;display:block}
.legend{list-style:none;padding:0;margin:10px 0 0;display:flex;flex-wrap:wrap;gap:6px 18px;font-size:14px}
.sw{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:6px;vertical-align:-1px}
.muted{color:var(--muted);font-size:13px}.good-text{color:#15803d;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
td:nth-child(-n+2){white-space:nowrap;overflow-wrap:normal}th{color:var(--muted);font-weight:600}
.group{border-left:4px solid #dc2626;padding-left:12px;margin:12px 0}.group.blocked{border-color:#d97706}
.group.vanished{border-color:#7c3aed}.group .n{font-variant-numeric:tabular-nums}
.live{border-color:#93c5fd;background:#eff6ff}.phase{font-size:13px;background:#2563eb;color:#fff;border-radius:99px;
padding:2px 10px;margin-left:8px;vertical-align:2px}
.verify{margin-top:12px}code{background:#f1f5f9;padding:1px 4px;border-radius:4px}
footer{color:var(--muted);font-size:12px;margin-top:20px}footer ul{padding-left:18px}
@media print{body{background:#fff}main{max-width:none;padding:0}section,.tile{border-color:#d1d5db}
header{-webkit-print-color-adjust:exact;print-color-adjust:exact}.chart,.sw{print-color-adjust:exact;
-webkit-print-color-adjust:exact}section{page-break-inside:avoid}}
"""

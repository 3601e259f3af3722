"""The plan report as ``gcbulk plan`` and ``gcbulk run`` print it: counts, mapping, cases, findings."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from gcbulk.engine.plan.findings import shown as escaped
from gcbulk.engine.plan.titles import redacted
from gcbulk.engine.service.plan_recording import PlanReport
from gcbulk.engine.upload.progress import human_bytes

_SHOW = 20  # list entries printed per section; --json has them all


def _print_list(title: str, lines: list[str], out: Any) -> None:
    if not lines:
        return
    print(f"{title} ({len(lines)}):", file=out)
    for line in lines[:_SHOW]:
        print(f"  {line}", file=out)
    if len(lines) > _SHOW:
        print(f"  … and {len(lines) - _SHOW} more (--json lists them all)", file=out)


def _print_cases(report: PlanReport, limit: int, out: Any, shown: Any) -> None:
    rows = report.cases[:limit]
    if not rows:
        return
    print(f"Cases (first {len(rows)} of {report.diff.cases}; case → socket ← files):", file=out)
    for row in rows:
        mark = "  [BLOCKED]" if row["blocked"] else ""
        print(f"  {shown(row['title'])}{mark}", file=out)
        for socket, files in row["sockets"].items():
            sources = (
                ", ".join(files)
                if isinstance(files, list)
                else (f"value from {files['value_from']}" if "value_from" in files else "value from [values]")
            )
            print(f"      {socket} ← {sources}", file=out)


def print_report(report: PlanReport, out: Any = None, *, show_cases: int = 0, redact_titles: bool = False) -> None:
    """The human plan report. ``redact_titles``: case titles as hashes (findings still show paths)."""
    out = out or sys.stdout
    shown = redacted if redact_titles else escaped  # a title from an older ledger may hold control characters
    diff, quota, config = report.diff, report.quota, report.config
    where = "dry run, nothing written" if report.dry_run else f"ledger {report.ledger_path}"
    print(f"Plan for {config.target.label} at {config.base_url} ({where})", file=out)
    print(f"  cases {diff.cases} · files {diff.files} · {human_bytes(diff.bytes)}", file=out)
    unchanged_done = diff.unchanged.get("done", 0)
    print(
        f"  new {diff.new_cases} · re-queued {len(diff.requeued)} · unchanged {sum(diff.unchanged.values())} "
        f"(done {unchanged_done}) · changed after upload {len(diff.changed_after_consumed)} · "
        f"removed {len(diff.removed)} · blocked {len(diff.blocked)}",
        file=out,
    )
    print(f"  uploads needed: at most {diff.files_to_upload} files, {human_bytes(diff.bytes_to_upload)}", file=out)
    if report.content_files_read or report.content_files_cached:
        print(
            f"  content checks: {report.content_files_read} files read · {report.content_files_cached} unchanged "
            "since their last check (not read again)",
            file=out,
        )
    if report.planner_files_read or report.planner_files_cached:
        print(
            f"  image headers and value files: {report.planner_files_read} files read · "
            f"{report.planner_files_cached} unchanged since their last read (not read again)",
            file=out,
        )
    if report.cache_rows_forgotten:
        print(
            f"  forgotten: {report.cache_rows_forgotten} remembered read results of files no longer in the tree (or no "
            "longer planned)",
            file=out,
        )
    print(
        f"  quota: largest value {human_bytes(quota.largest_value_bytes)} of 128 GiB (verified) / 2 GiB "
        f"(unverified); {quota.uploads} uploads in all, at most {config.engine.live_upload_ceiling} alive at once "
        "(server cap 2000)",
        file=out,
    )
    if report.mapping_lines:
        print("Mapping (socket ← file names, by number of cases):", file=out)
        for line in report.mapping_lines:
            print(f"  {line}", file=out)
    _print_cases(report, show_cases, out, shown)
    _print_list("Re-queued (changed before Grand Challenge took them)", [shown(t) for t in diff.requeued], out)
    _print_list(
        "Changed after Grand Challenge took them (reported, not re-sent)",
        [f"{shown(title)} [{socket}]: {change}" for title, socket, change in diff.changed_after_consumed],
        out,
    )
    _print_list(
        "Removed from the tree (nothing is deleted on Grand Challenge)",
        [f"{shown(title)} (was {state})" for title, state in diff.removed],
        out,
    )
    _print_list("Blocked cases", [shown(t) for t in diff.blocked], out)
    severities = Counter(finding.severity for finding in report.findings)
    if report.findings:
        print(
            f"Findings: {severities['blocking']} blocking, {severities['warning']} warnings, {severities['info']} info",
            file=out,
        )
    for severity in ("blocking", "warning"):
        of_severity = [f for f in report.findings if f.severity == severity]
        for finding in of_severity[: _SHOW * 5]:
            print(f"  {severity.upper()} [{finding.code}] {finding.path}", file=out)
            print(f"      {finding.message}", file=out)
            print(f"      fix: {finding.fix}", file=out)
        if len(of_severity) > _SHOW * 5:
            print(f"  … and {len(of_severity) - _SHOW * 5} more {severity} findings (--json lists them all)", file=out)
    if severities["info"]:
        print(f"  ({severities['info']} info findings not shown; --json lists them)", file=out)
    if report.blocking:
        why = " (--strict: any blocking finding holds back every case)" if report.strict else ""
        print(
            f"Blocking findings{why}: fix them and run 'gcbulk plan' again; nothing will be uploaded until then.",
            file=out,
        )
    elif report.partly_blocked:
        runnable = diff.cases - len(diff.blocked)
        held = (
            f"{len(diff.blocked)} case(s) are skipped until their blocking findings are fixed"
            if diff.blocked
            else "the blocking findings above are outside any case folder and skipped"
        )
        print(
            f"Blocked: {held}; the other {runnable} case(s) will run. Fix them and plan again ('--strict' holds "
            "back every case instead).",
            file=out,
        )

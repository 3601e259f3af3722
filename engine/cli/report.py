"""``gcbulk report JOB.toml --format csv|json [--out FILE]``: one row per case, from the ledger.
``gcbulk report JOB.toml --html OUT.html``: the picture of the migration in one self-contained page
(``engine/service/report_html.py``), from the ledger and the event file.

Each row: title, folder, state, reason (why it failed or is blocked), display set pk, files and bytes, bytes sent,
attempts, and timings (started, finished, duration). Reads the ledger without its lock, so it works while a run
(``gcbulk run --follow`` in a container, say) is busy. Exit 0, 2 when the job or the ledger cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gcbulk.engine import settings
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.ledger_location import add_ledger_argument
from gcbulk.engine.plan.titles import redacted, scrub
from gcbulk.engine.results.csv_cells import SafeDictWriter
from gcbulk.engine.service.report_events import read_event_facts
from gcbulk.engine.service.report_format import gcbulk_version
from gcbulk.engine.service.report_html import render_page
from gcbulk.redaction import redact as redact_secrets
from gcbulk.safe_files import replacing
from gcbulk.state.ledger import Ledger, LedgerError
from gcbulk.state.report import REPORT_FIELDS, CaseReportRow, case_report
from gcbulk.state.report_aggregates import ledger_picture

HELP = "Write a per-case report of a job (state, reason, display set, bytes, timings) as CSV or JSON."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=Path, help="the job file (TOML)")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    parser.add_argument(
        "--html",
        type=Path,
        metavar="OUT.html",
        help="write the migration report as one self-contained HTML page instead (charts, reasons, runs; offline "
        "and printable)",
    )
    parser.add_argument("--events", type=Path, help="the run's event file (default: as gcbulk run finds it)")
    parser.add_argument(
        "--redact-titles",
        action="store_true",
        help="show a hash of each title and folder instead (also: cases.redact_titles in the job)",
    )
    add_ledger_argument(parser)


def _row(row: CaseReportRow, redact: bool) -> dict[str, Any]:
    data: dict[str, Any] = redact_secrets(row.as_dict())  # reasons hold server text: the token never reaches a report
    if redact:  # the ledger (0600) keeps the mapping; the report may be shared
        data["reason"] = scrub(row.reason, row.title, row.folder)
        data["title"], data["folder"] = redacted(row.title), redacted(row.folder)
    return data


def write_report(ledger: Ledger, out: IO[str], fmt: str, *, redact: bool = False) -> int:
    """Writes every case; returns how many. ``redact``: titles and folders as hashes."""
    count = 0
    if fmt == "csv":
        writer = SafeDictWriter(out, fieldnames=REPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in case_report(ledger):
            writer.writerow(_row(row, redact))
            count += 1
        return count
    # JSON streamed as one array, one case per line, so a large job's report never sits in memory at once.
    out.write("[")
    for row in case_report(ledger):
        out.write(("\n" if count == 0 else ",\n") + json.dumps(_row(row, redact), separators=(",", ":")))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def run(args: argparse.Namespace) -> int:
    try:
        resolved = settings.resolve(args.job, args, read_token=False)
        redact = args.redact_titles or resolved.job.cases.redact_titles
        if args.html is not None:
            if args.out is not None:
                raise ConfigurationError("--html OUT.html names its own file: drop --out (it is for csv and json)")
            return _write_html(resolved, args.html, redact=redact)
        with Ledger.open_readonly(resolved.ledger, resolved.job.binding) as ledger:
            if args.out is None:
                write_report(ledger, sys.stdout, args.format, redact=redact)
            else:
                # 0600 and atomic: a report names every case, and case titles are often patient identifiers.
                with replacing(args.out.absolute(), "w", encoding="utf-8", newline="") as out:
                    count = write_report(ledger, out, args.format, redact=redact)
                print(f"gcbulk report: {count} case(s) written to {args.out}", file=sys.stderr)
    except (ConfigurationError, LedgerError) as exc:
        print(f"gcbulk report: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # the reader of stdout went away (`| head -1`): the guard ends quietly with 141
    except OSError as exc:
        print(f"gcbulk report: cannot write {args.html or args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


def _write_html(resolved: settings.RunSettings, out: Path, *, redact: bool) -> int:
    started = time.perf_counter()
    # A job of 100 000 cases takes about ten seconds: say what is being read meanwhile.
    print(f"gcbulk report: reading the ledger and the event file {resolved.events} …", file=sys.stderr)
    with Ledger.open_readonly(resolved.ledger, resolved.job.binding) as ledger:
        picture = ledger_picture(ledger)
    facts = read_event_facts(resolved.events)
    page = render_page(picture, facts, redact=redact, generated_at=datetime.now(UTC), version=gcbulk_version())
    # 0600 and atomic, as the CSV: the page names cases (unless --redact-titles).
    with replacing(out.absolute(), "w", encoding="utf-8") as stream:
        stream.write(page)
    print(
        f"gcbulk report: {picture.cases_total:,} case(s) drawn in {out} "
        f"({len(page.encode()) / 1024:.0f} KiB, {time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    return 0

"""``gcbulk plan JOB.toml``: walk the case tree, run the preflight checks, and record the plan in the ledger.

Prints cases, files, bytes, uploads needed, the quota estimate, the diff against the ledger (new / re-queued /
unchanged / changed after Grand Challenge took them / removed / blocked), which files each socket takes ("ct-image ←
ct.mha in 498 cases, ← airway_seg.mha in 2 cases"; ``--show-cases N`` lists case → socket → files), then every
finding with its path and fix.

A blocking finding blocks its own case: that case is recorded as ``blocked`` and skipped, the others run. Only a
finding about the whole job (the case root, the sockets) holds everything back — or any blocking finding with
``--strict`` (all-or-nothing). Exit 0 when the plan is recorded and clean, 1 when it is recorded but some cases (or
folders of the tree) are blocked, 2 on a configuration error or when nothing can run.

The planning itself (``plan_into_ledger``, ``fetch_catalogue``) is ``gcbulk.engine.service.plan_recording``, the printing
``gcbulk.engine.cli.plan_report``;
shared with ``gcbulk run`` and the Python API.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from gcbulk.engine import settings
from gcbulk.engine.cli import EXIT_CONFIG_ERROR, EXIT_OK, EXIT_SOME_FAILED
from gcbulk.engine.cli.plan_report import print_report
from gcbulk.engine.cli.server_options import configure_command_logging
from gcbulk.engine.gc.errors import ConfigurationError, GcbulkError
from gcbulk.engine.ledger_location import add_ledger_argument, ledger_exists
from gcbulk.engine.service.ledger_time import check_not_behind_event_log
from gcbulk.engine.service.plan_recording import fetch_catalogue, load_catalogue, plan_into_ledger
from gcbulk.state.ledger import Ledger, LedgerError
from gcbulk.state.server_truth import ListedDisplaySet

# A dry run sends only GETs; whether the token may add display sets is found out by a POST the server refuses, so
# `run` asks it before any file moves (engine/upload/transfer.py), and `plan` without --dry-run asks it too.
DRY_RUN_PERMISSION = (
    "Not checked in a dry run: whether this token may add display sets to the study (that check is a request the "
    "server refuses, and a dry run sends none that writes). gcbulk run checks it before any file moves."
)
HELP = "Plan a job: walk the case tree, check it, and record what to upload in the ledger."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=Path, help="the job file (TOML)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="show the plan and its diff; write nothing, locally or on the server (GET requests only)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--offline", action="store_true", help="skip checking socket slugs on the server")
    parser.add_argument(
        "--sockets",
        type=Path,
        metavar="FILE",
        help="the job's sockets as JSON (a list, or the components/interfaces/ page): with "
        "--offline, checks masks and JSON values against them without asking the server",
    )
    parser.add_argument(
        "--no-content-checks",
        action="store_true",
        help="skip reading masks, image headers and JSON files (the server's own checks)",
    )
    parser.add_argument(
        "--redact-titles",
        action="store_true",
        help="show a hash of each case title (also: cases.redact_titles in the job file)",
    )
    parser.add_argument(
        "--show-cases",
        type=int,
        default=0,
        metavar="N",
        help="list the first N cases with the files each socket takes (--json lists them all)",
    )
    add_strict_argument(parser)
    parser.add_argument(
        "--adopt-existing",
        action="store_true",
        default=None,
        help="cases whose title already names a display set this job did not make take that display "
        "set over: only sockets without a value are filled, never one with answers (env "
        "GCBULK_ADOPT_EXISTING)",
    )
    parser.add_argument("--allow-phi-titles", action="store_true", default=None, help=settings.PHI_HELP)
    add_ledger_argument(parser)
    parser.add_argument(
        "--token-file", type=Path, help="read the API token from this file instead of $GRAND_CHALLENGE_AUTHORIZATION"
    )


def add_strict_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help="all or nothing: any blocking finding holds back every case (default: a blocked case "
        "is skipped and the others run)",
    )


def run(args: argparse.Namespace) -> int:
    configure_command_logging()  # warnings scrubbed of the token; a long wait (the study's listing) says so
    try:
        # Job file + GCBULK_* environment + flags (engine/settings.py): the same job and ledger `gcbulk run` uses.
        resolved = settings.resolve(args.job, args, read_token=not args.offline)
        config = resolved.job
        catalogue = listing = None
        if not args.offline:
            catalogue, listing = fetch_catalogue(
                config,
                resolved.require_token(),
                with_sockets=args.sockets is None,
                with_titles=not resolved.adopt_existing,
                check_editor=not args.dry_run,
            )
        if args.sockets is not None:
            catalogue = load_catalogue(args.sockets, config)
    except ConfigurationError as exc:
        print(f"gcbulk plan: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except GcbulkError as exc:
        print(
            f"gcbulk plan: could not check the job's sockets at {config.base_url}: {exc}. "
            "Check the server and the token, or plan with --offline.",
            file=sys.stderr,
        )
        return EXIT_CONFIG_ERROR
    ledger_path = resolved.ledger
    if args.show_cases < 0:
        print("gcbulk plan: --show-cases takes a number of cases, 0 or more", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    keep_cases = None if args.json else args.show_cases
    try:
        if args.dry_run and not ledger_exists(ledger_path):
            with tempfile.TemporaryDirectory(prefix="gcbulk-plan-") as scratch:
                with Ledger.open(Path(scratch) / "scratch.ledger.sqlite", config.binding) as ledger:
                    _list_study_into(ledger, listing)
                    report = plan_into_ledger(
                        config,
                        ledger,
                        catalogue=catalogue,
                        dry_run=True,
                        strict=args.strict,
                        keep_cases=keep_cases,
                        check_content=not args.no_content_checks,
                        check_titles_against_listing=listing is not None,
                    )
                report.ledger_path = None  # the scratch ledger is gone; there was no ledger to compare with
        else:
            with Ledger.open(ledger_path, config.binding, job_file=config.job_file) as ledger:
                _list_study_into(ledger, listing)
                report = plan_into_ledger(
                    config,
                    ledger,
                    catalogue=catalogue,
                    dry_run=args.dry_run,
                    strict=args.strict,
                    keep_cases=keep_cases,
                    check_content=not args.no_content_checks,
                    check_titles_against_listing=listing is not None,
                )
                if listing is not None and report.diff.blocked:  # a ledger that went back in time (ledger_time.py)
                    suspects = ledger.foreign_display_set_titles().keys() & set(report.diff.blocked)
                    check_not_behind_event_log(resolved.ledger_shown, resolved.events, suspects)
    except LedgerError as exc:
        print(f"gcbulk plan: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report, show_cases=args.show_cases, redact_titles=args.redact_titles or config.cases.redact_titles)
        if args.dry_run and not args.offline:
            print(DRY_RUN_PERMISSION)
    if report.blocking:
        return EXIT_CONFIG_ERROR
    return EXIT_SOME_FAILED if report.partly_blocked else EXIT_OK


def _list_study_into(ledger: Ledger, listing: list[ListedDisplaySet] | None) -> None:
    """The study's display sets, as just listed, where the plan's title check reads them (the connection's own)."""
    if listing is not None:
        ledger.start_study_listing()
        ledger.add_to_study_listing(listing)

"""``gcbulk reorder (--reader-study SLUG | --job JOB) (--from order.csv | --by title|natural-title) [--dry-run]
[--skip-answered]``: set display-set orders, all or nothing.

Every display set is checked first (the user is an editor; which display sets have answers); a plan that would fail
anywhere, or give two display sets one order, changes nothing and says why (exit 1). ``--skip-answered`` keeps the
display sets with answers at their orders and lays the others around them; ``--dry-run`` shows the plan and changes
nothing. Idempotent and resumable: display sets already at their target are not touched, and an interrupted run is
simply run again (its plan and progress are in ``--ledger``: by default beside the job's ledger with ``--job``, else
in the user's state folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gcbulk.engine.api import reorder_study
from gcbulk.engine.cli import EXIT_CONFIG_ERROR, EXIT_OK, EXIT_SOME_FAILED
from gcbulk.engine.cli.server_options import (
    add_connection_arguments,
    command_server,
    run_against_server,
)
from gcbulk.engine.results.reorder import BY_CHOICES

HELP = "set the order of a reader study's display sets in bulk (from a CSV, or by title)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reader-study", metavar="SLUG", help="the study's slug (env GCBULK_READER_STUDY; default: the --job file's)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from",
        dest="from_csv",
        type=Path,
        metavar="CSV",
        help="a CSV with 'order' and 'pk' (or 'title') columns, e.g. an edited display_sets.csv",
    )
    source.add_argument(
        "--by", choices=BY_CHOICES, help="order 10, 20, 30 … by title; natural-title puts case2 before case10"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check every display set and show the plan; change nothing"
    )
    parser.add_argument(
        "--skip-answered",
        action="store_true",
        help="keep display sets that have answers at their orders (the server refuses to change them) and lay the "
        "others around them, instead of refusing the whole reorder",
    )
    parser.add_argument(
        "--ledger",
        type=Path,
        metavar="PATH",
        help="where progress is kept (default: <job stem>.reorder.sqlite beside the job's ledger with --job, else "
        "$XDG_STATE_HOME/gcbulk/reorder/<server>/<slug>.reorder.sqlite)",
    )
    parser.add_argument("--concurrency", type=int, default=8, metavar="N", help="PATCH requests in flight")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        print("gcbulk reorder: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    server = command_server("reorder", args)
    if server is None:
        return EXIT_CONFIG_ERROR

    async def main() -> int:
        summary = await reorder_study(
            server,
            by=args.by,
            from_csv=args.from_csv,
            ledger=args.ledger,
            concurrency=args.concurrency,
            dry_run=args.dry_run,
            skip_answered=args.skip_answered,
            job_file=args.job,
        )
        print("\n".join(summary.lines()))
        return EXIT_SOME_FAILED if summary.failed or summary.refused else EXIT_OK

    return run_against_server("reorder", main)

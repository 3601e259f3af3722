"""``gcbulk reorder --reader-study SLUG (--from order.csv | --by title|natural-title)``: set display-set orders.

Idempotent and resumable: display sets already at their target are not touched, and an interrupted run is simply run
again (its plan and progress are in ``--ledger``, default ``<slug>.reorder.sqlite`` in the current folder).
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
from gcbulk.engine.results.safe_paths import safe_component

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
        "--ledger",
        type=Path,
        metavar="PATH",
        help="where progress is kept (default: <slug>.reorder.sqlite in the current folder)",
    )
    parser.add_argument("--concurrency", type=int, default=8, metavar="N", help="PATCH requests in flight")
    add_connection_arguments(parser)


def default_ledger_path(slug: str) -> Path:
    return Path.cwd() / f"{safe_component(slug, fallback='study')}.reorder.sqlite"


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        print("gcbulk reorder: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    server = command_server("reorder", args)
    if server is None:
        return EXIT_CONFIG_ERROR
    slug = server.reader_study

    async def main() -> int:
        summary = await reorder_study(
            server,
            by=args.by,
            from_csv=args.from_csv,
            ledger=args.ledger or default_ledger_path(slug),
            concurrency=args.concurrency,
        )
        print("\n".join(summary.lines()))
        return EXIT_SOME_FAILED if summary.failed else EXIT_OK

    return run_against_server("reorder", main)

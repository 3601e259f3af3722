"""``gcbulk export (--reader-study SLUG | --job JOB.toml) --out DIR [--mine] [--no-masks]``: answers, questions, display sets and masks of a study.

Writes ``answers.csv``, ``answers.jsonl``, ``answers_per_case.csv``, ``questions.json``, ``display_sets.csv`` and
``masks/<case>/<question>/<reader>.<ext>`` into DIR, with its ledger in ``DIR/.gcbulk/``. Running it again fetches
only what changed and resumes cut mask downloads (see ``engine/results/export.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gcbulk.engine.api import export_study
from gcbulk.engine.cli import EXIT_CONFIG_ERROR, EXIT_OK, EXIT_SOME_FAILED
from gcbulk.engine.cli.server_options import (
    add_connection_arguments,
    run_against_server,
    server_from_args,
)
from gcbulk.engine.gc.errors import ConfigurationError

HELP = "export a reader study's answers (readable, per case), questions, display sets and mask images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reader-study", metavar="SLUG",
                        help="the study's slug: the last part of its URL on Grand Challenge (env "
                             "GCBULK_READER_STUDY; default: the --job file's)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="the folder to write into")
    parser.add_argument("--mine", action="store_true",
                        help="only your own answers (answers/mine/); by default every answer you may see")
    parser.add_argument("--mask-downloads", type=int, default=8, metavar="N", help="masks downloaded at once")
    parser.add_argument("--no-masks", action="store_true", help="answers and tables only; no mask images")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.mask_downloads < 1:
        print("gcbulk export: --mask-downloads must be at least 1", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        server = server_from_args("export", args)
        server.require_reader_study()
    except ConfigurationError as exc:
        print(f"gcbulk export: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR

    async def main() -> int:
        summary = await export_study(server, args.out, mine=args.mine, mask_downloads=args.mask_downloads,
                                     masks=not args.no_masks)
        print("\n".join(summary.lines()))
        return EXIT_SOME_FAILED if summary.failures else EXIT_OK

    return run_against_server("export", main)

"""``gcbulk export (--reader-study SLUG | --job JOB.toml) --out DIR [--mine] [--no-masks]``: answers, questions, display sets and masks of a study.

Writes ``answers.csv``, ``answers.jsonl``, ``answers_per_case.csv``, ``questions.json``, ``display_sets.csv`` and
``masks/<case>/<question>/<reader>.<ext>`` into DIR, with its ledger in ``DIR/.gcbulk/``. Running it again fetches
only what changed and resumes cut mask downloads (see ``engine/results/export.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gcbulk.engine.api import export_study
from gcbulk.engine.cli import EXIT_CONFIG_ERROR, EXIT_OK, EXIT_SOME_FAILED
from gcbulk.engine.cli.server_options import (
    add_connection_arguments,
    command_server,
    run_against_server,
)
from gcbulk.engine.results.masks import DownloadLimits

HELP = "export a reader study's answers (readable, per case), questions, display sets and mask images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reader-study",
        metavar="SLUG",
        help="the study's slug: the last part of its URL on Grand Challenge (env "
        "GCBULK_READER_STUDY; default: the --job file's)",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="the folder to write into")
    parser.add_argument(
        "--mine", action="store_true", help="only your own answers (answers/mine/); by default every answer you may see"
    )
    parser.add_argument("--mask-downloads", type=int, default=8, metavar="N", help="masks downloaded at once")
    parser.add_argument("--no-masks", action="store_true", help="answers and tables only; no mask images")
    limits = DownloadLimits()
    parser.add_argument(
        "--max-download-bytes",
        type=int,
        default=limits.max_bytes,
        metavar="BYTES",
        help="the largest mask file accepted, and the cap on one whose size the object store does not "
        f"announce (default {limits.max_bytes})",
    )
    parser.add_argument(
        "--download-deadline",
        type=float,
        default=limits.deadline_seconds,
        metavar="SECONDS",
        help="the longest one mask file may take, retries included; a rerun resumes it "
        f"(default {limits.deadline_seconds:g})",
    )
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.mask_downloads < 1:
        print("gcbulk export: --mask-downloads must be at least 1", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.max_download_bytes < 1 or args.download_deadline <= 0:
        print("gcbulk export: --max-download-bytes and --download-deadline must be positive", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    server = command_server("export", args)
    if server is None:
        return EXIT_CONFIG_ERROR

    async def main() -> int:
        summary = await export_study(
            server,
            args.out,
            mine=args.mine,
            mask_downloads=args.mask_downloads,
            masks=not args.no_masks,
            limits=DownloadLimits(max_bytes=args.max_download_bytes, deadline_seconds=args.download_deadline),
        )
        print("\n".join(summary.lines()))
        return EXIT_SOME_FAILED if summary.failures else EXIT_OK

    return run_against_server("export", main)

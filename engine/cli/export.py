"""``gcbulk export (--reader-study SLUG | --job JOB.toml) --out DIR [--mine] [--no-masks]``: answers, questions, display sets and masks of a study.

Writes ``answers.csv``, ``answers.jsonl``, ``answers_per_case.csv``, ``questions.json``, ``display_sets.csv`` and
``masks/<case>/<question>/<reader>.<ext>`` into DIR, with its ledger in ``DIR/.gcbulk/``. Running it again fetches
only what changed and resumes cut mask downloads (see ``engine/results/export.py``).

``gcbulk export --archive SLUG --out DIR`` (or ``--job`` of a job aimed at an archive): an archive's items as a case tree (``cases/<item>/<socket>.<ext>``) with
the ``job.toml`` and ``titles.csv`` that make ``gcbulk plan`` read it back (``engine/results/archive_export.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gcbulk.engine.api import export_study
from gcbulk.engine.archive_api import ArchiveExportSummary, export_archive_folder
from gcbulk.engine.cli import EXIT_CONFIG_ERROR, EXIT_OK, EXIT_SOME_FAILED
from gcbulk.engine.cli.server_options import (
    add_connection_arguments,
    command_server,
    configure_command_logging,
    run_against_server,
    server_from_args,
)
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.results.masks import DownloadLimits
from gcbulk.engine.settings import ServerSettings

HELP = (
    "export a reader study's answers (readable, per case), questions, display sets and mask images; or an "
    "archive's items as a case tree that 'gcbulk plan' reads back"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reader-study",
        metavar="SLUG",
        help="the study's slug: the last part of its URL on Grand Challenge (env "
        "GCBULK_READER_STUDY; default: the --job file's)",
    )
    parser.add_argument(
        "--archive",
        metavar="SLUG",
        help="export this archive instead: one case folder per item, a file per socket, and a job.toml that plans "
        "the folder back to the same sockets",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="the folder to write into")
    parser.add_argument(
        "--mine", action="store_true", help="only your own answers (answers/mine/); by default every answer you may see"
    )
    parser.add_argument(
        "--mask-downloads",
        type=int,
        default=8,
        metavar="N",
        help="masks (with --archive: images and files) downloaded at once",
    )
    parser.add_argument("--no-masks", action="store_true", help="answers and tables only; no mask images")
    limits = DownloadLimits()
    parser.add_argument(
        "--max-download-bytes",
        type=int,
        default=limits.max_bytes,
        metavar="BYTES",
        help="the largest mask (or archive) file accepted, and the cap on one whose size the object store does not "
        f"announce (default {limits.max_bytes})",
    )
    parser.add_argument(
        "--download-deadline",
        type=float,
        default=limits.deadline_seconds,
        metavar="SECONDS",
        help="the longest one file may take, retries included; a rerun resumes it "
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
    limits = DownloadLimits(max_bytes=args.max_download_bytes, deadline_seconds=args.download_deadline)
    job_server = None
    if args.archive is None and args.job is not None and args.reader_study is None:
        job_server = _job_server(args)
        if job_server is not None and job_server.archive:  # a job aimed at an archive: its export is the archive's
            args.archive = job_server.archive
    if args.archive is not None:
        return _export_archive(args, limits, job_server)
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
            limits=limits,
        )
        print("\n".join(summary.lines()))
        return EXIT_SOME_FAILED if summary.failures else EXIT_OK

    return run_against_server("export", main)


def _job_server(args: argparse.Namespace) -> ServerSettings | None:
    try:
        return server_from_args("export", args)
    except ConfigurationError:  # the reader-study path below says what is wrong with the job file
        return None


def _export_archive(args: argparse.Namespace, limits: DownloadLimits, server: ServerSettings | None = None) -> int:
    """``server``: already resolved from ``--job`` (the job file and the token are read once)."""
    refused = [flag for flag, given in (("--reader-study", args.reader_study), ("--mine", args.mine)) if given]
    refused += ["--no-masks"] if args.no_masks else []
    if refused:
        print(
            f"gcbulk export: {refused[0]} is for a reader study's export; --archive exports the archive's items "
            "(drop one of the two)",
            file=sys.stderr,
        )
        return EXIT_CONFIG_ERROR
    configure_command_logging()
    try:
        server = server or server_from_args("export", args)
    except ConfigurationError as exc:
        print(f"gcbulk export: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR

    async def main() -> int:
        summary = await export_archive_folder(
            server, args.archive, args.out, downloads=args.mask_downloads, limits=limits, on_progress=_say_progress
        )
        print("\n".join(summary.lines()))
        return EXIT_SOME_FAILED if summary.failures else EXIT_OK

    return run_against_server("export", main)


def _say_progress(summary: ArchiveExportSummary) -> None:
    print(f"gcbulk export: {summary.progress_line()}", file=sys.stderr, flush=True)

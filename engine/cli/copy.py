"""``gcbulk copy JOB.toml --from archive:SLUG --to reader-study:SLUG``: the source's display sets or items into the
target, each image value naming the source's image (no bytes move), each JSON value copied as it is.

Planned into a ledger beside the job file, resumable (a copy killed at any moment, run again, makes no second display
set or item), verified against the server at its start and end like ``gcbulk run``. ``--dry-run`` lists what would be
created and sends only GETs.

Exit 0 when every case is copied, 1 when some failed (listed with the server's reason), 2 when the job file, the
token or a slug cannot be used, 130/143 when stopped (run it again to resume).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gcbulk.engine.cli import EXIT_CONFIG_ERROR, EXIT_OK, EXIT_SOME_FAILED
from gcbulk.engine.cli.server_options import configure_command_logging, run_against_server
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.jobfile import TOKEN_ENV, JobFileError, load_token
from gcbulk.engine.plan.findings import shown

if TYPE_CHECKING:  # the command imports its engine only when it runs (gcbulk --help stays cheap)
    from gcbulk.engine.service.copy_job import CopyJob

HELP = "Copy a reader study's display sets or an archive's items into another study or archive, moving no bytes."
_SHOW = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=Path, help="the copy job file (TOML): base_url, title, include, [sockets]")
    parser.add_argument("--from", dest="source", metavar="archive:SLUG|reader-study:SLUG", help="copy from here")
    parser.add_argument("--to", dest="target", metavar="archive:SLUG|reader-study:SLUG", help="copy to here")
    parser.add_argument("--dry-run", action="store_true", help="list what would be created; change nothing")
    parser.add_argument(
        "--status", action="store_true", help="show the copy's progress from its ledger (as gcbulk status); no server"
    )
    parser.add_argument("--token-file", type=Path, help=f"a file holding the API token (default: ${TOKEN_ENV})")
    parser.add_argument(
        "--from-token-file",
        type=Path,
        help="the source server's token, for a copy from another server (default: $GCBULK_FROM_AUTHORIZATION)",
    )


def run(args: argparse.Namespace) -> int:
    from gcbulk.engine.service.copy_bytes import StagingFailed
    from gcbulk.engine.service.copy_job import load_copy_job
    from gcbulk.engine.service.copying import CopyPreview, copy_or_preview, source_token

    configure_command_logging()
    try:
        job = load_copy_job(args.job, source=args.source, target=args.target)
        if args.status:  # the ledger only: no token needed
            return _status(job)
        token = load_token(args.token_file)
        from_token = source_token(job, args.from_token_file, os.environ)
    except (JobFileError, ConfigurationError) as exc:
        print(f"gcbulk copy: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    direction = f"{job.source.label} → {job.target.label}"

    async def main() -> int:
        where = job.from_base_url or job.base_url
        moving = " (another server: its images are downloaded, then uploaded)" if job.moves_bytes else ""
        print(f"gcbulk copy: listing {job.source.label} at {where}{moving}", file=sys.stderr)
        try:
            result = await copy_or_preview(job, token, from_token=from_token, dry_run=args.dry_run)
        except StagingFailed as exc:  # work is left, and a rerun resumes it: "cases failed", not a crash
            print(f"gcbulk copy: {shown(str(exc))}", file=sys.stderr)
            return EXIT_SOME_FAILED
        if isinstance(result, CopyPreview):
            create = result.to_create
            print(
                f"gcbulk copy (dry run): {direction}: {len(result.cases)} case(s); would create "
                f"{len(create)} {job.target.container_noun}(s), {len(result.cases) - len(create)} already there "
                "by title (an earlier run of this copy, or someone else's: the run adopts only its own)"
            )
            for case in create[:_SHOW]:
                sockets = ", ".join(item.socket_slug for item in case.items) or "no values"
                print(f"  create {shown(case.title)} ← {job.source.container_noun} {case.folder} ({sockets})")
            if len(create) > _SHOW:
                print(f"  … and {len(create) - _SHOW} more")
            return EXIT_OK
        done, failed, blocked = result.run.done, result.run.failed, result.planned.blocked
        print(
            f"gcbulk copy: {direction}: {done} case(s) copied this run, {len(failed)} failed, "
            f"{len(blocked)} blocked (of {result.planned.cases} planned)",
            file=sys.stderr,
        )
        for title, reason in failed[:_SHOW]:
            print(f"  failed {shown(title)}: {shown(reason)}", file=sys.stderr)
        for title in blocked[:_SHOW]:
            print(f"  blocked {shown(title)}: two source containers give this title", file=sys.stderr)
        if result.run.interrupted:
            print("gcbulk copy: stopped; run it again to resume", file=sys.stderr)
            return EXIT_SOME_FAILED
        return EXIT_SOME_FAILED if failed or blocked else EXIT_OK

    return run_against_server("copy", main)


def _status(job: CopyJob) -> int:
    """The copy's ledger as ``gcbulk status`` shows a job's: counts by state and the cases needing attention."""
    from gcbulk.engine.cli.status import print_status
    from gcbulk.engine.service.status import collect_status
    from gcbulk.state.ledger import Ledger, LedgerError, default_ledger_path

    try:
        with Ledger.open_readonly(default_ledger_path(job.job_file), job.binding) as ledger:
            status = collect_status(ledger, limit=_SHOW)
            attention = sum(ledger.counts_by_state()["case"].get(s, 0) for s in ("failed", "blocked", "vanished"))
    except LedgerError as exc:
        print(f"gcbulk copy: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    print_status(status, attention)
    cases = status["counts"]["case"]
    return EXIT_SOME_FAILED if cases.get("failed") or cases.get("blocked") else EXIT_OK

"""``gcbulk retry-failed JOB.toml``: queue the failed cases again (with fresh attempt budgets), then run.

Uploads that were completed or half-sent before the failure are reused or resumed; display sets are found again by
their titles. ``--no-run`` only re-queues. Exit codes as ``gcbulk run``.
"""

from __future__ import annotations

import argparse
import sys

from gcbulk.engine import settings
from gcbulk.engine.cli import run as run_command
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.state.ledger import Ledger, LedgerError

HELP = "Queue the failed cases of a job again and run it."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_command.add_arguments(parser)
    parser.add_argument("--no-run", action="store_true", help="only queue the failed cases again; do not run")


def run(args: argparse.Namespace) -> int:
    try:
        # The same ledger `gcbulk run` would use: job file + GCBULK_* environment + flags (engine/settings.py).
        resolved = settings.resolve(args.job, args, read_token=False)
        config = resolved.job
        with Ledger.open(resolved.ledger, config.binding, job_file=config.job_file) as ledger:
            requeued = ledger.requeue_failed_cases()
    except (ConfigurationError, LedgerError) as exc:
        print(f"gcbulk retry-failed: {exc}", file=sys.stderr)
        return run_command.EXIT_CONFIG_ERROR
    print(f"gcbulk retry-failed: {len(requeued)} failed case(s) queued again", file=sys.stderr)
    if args.no_run:
        return run_command.EXIT_OK
    return run_command.run(args)

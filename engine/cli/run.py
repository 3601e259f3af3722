"""``gcbulk run JOB.toml``: plan the job if the ledger has no plan yet, then run every case to the end.

Every run plans first (a re-walk: new and vanished case folders are picked up, unchanged files cost a ``stat``). A case
with a blocking finding is skipped and listed; the others run (``--strict``: any blocking finding holds back all).

Exit 0 when every planned case is done, 1 when some cases failed — in this run or an earlier one — (listed with their
reasons; ``gcbulk retry-failed`` queues them again) or are blocked by their findings, 2 on a configuration error (job
file, token, reader study, findings that hold back the whole job), 130 / 143 when SIGINT / SIGTERM stopped it with
cases not done (it resumes where it stopped); the table is ``gcbulk/exit_codes.py``.

The first SIGINT/SIGTERM starts nothing new and lets the parts on the wire finish for ``--drain`` seconds; every
recorded step is already in the ledger, so that is the checkpoint. A second signal stops at once — still resumable,
because every step is recorded before the next one starts.

``--follow`` keeps running instead (``engine/service/follow.py``): new case folders are picked up every poll interval,
failed cases come back with growing backoff, transient faults are waited out; it exits 0 on a signal, 2 on a fatal
configuration error. Both modes serve ``/metrics``, ``/healthz`` and ``/readyz`` and log JSON lines on stdout
(``engine/service/job_service.py``, ``engine/service/logs.py``); settings come from flags > ``GCBULK_*`` > job file
(``engine/settings.py``).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from gcbulk.engine import settings
from gcbulk.engine.cli import EXIT_CONFIG_ERROR, EXIT_KILLED, EXIT_OK, EXIT_SOME_FAILED
from gcbulk.engine.cli.plan import add_strict_argument
from gcbulk.engine.cli.plan_report import print_report
from gcbulk.engine.cli.server_options import job_settings_with_token
from gcbulk.engine.gc.errors import (
    TOKEN_REFUSED,
    AuthenticationFailed,
    ConfigurationError,
    GcbulkError,
)
from gcbulk.engine.plan.titles import redacted, scrub
from gcbulk.engine.service import follow, logs
from gcbulk.engine.service.job_service import JobService, PlanBlocked, run_once
from gcbulk.engine.upload.progress import format_progress_line
from gcbulk.engine.upload.transfer import RunOutcome
from gcbulk.exit_codes import exit_code_for_signal
from gcbulk.state.ledger import LedgerError, default_ledger_path

HELP = "Run a job: plan it if needed, upload every case, create its display set and wait for the imports."
_SHOW_FAILED = 50

__all__ = [
    "EXIT_CONFIG_ERROR",
    "EXIT_KILLED",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "add_arguments",
    "default_ledger_path",
    "events_path_for",
    "run",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=Path, help="the job file (TOML)")
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep running (a container's mode): pick up new case folders every --poll-interval, "
        "retry failed cases with growing backoff, wait out outages; stop with SIGTERM",
    )
    parser.add_argument(
        "--replan",
        action="store_true",
        help="kept for scripts: every run walks the case tree again (new, changed and vanished "
        "case folders are picked up; unchanged ones cost a stat)",
    )
    add_strict_argument(parser)
    parser.add_argument(
        "--redact-titles",
        action="store_true",
        help="logs and events show a hash of each title (also: cases.redact_titles in the job file)",
    )
    settings.add_arguments(parser)


def events_path_for(job_file: Path) -> Path:
    return job_file.with_name(f"{job_file.stem}.events.jsonl")


def _print_outcome(
    outcome: RunOutcome,
    ledger_shown: str,
    events_path: Path,
    blocked: Sequence[str] = (),
    redact: bool = False,
    cases: dict[str, int] | None = None,
) -> None:
    def shown(title: str) -> str:
        return redacted(title) if redact else title

    if outcome.stats is not None:  # the whole job's cases (the ledger's), this run's files and bytes
        line = format_progress_line(outcome.stats, cases, moving=not outcome.interrupted)
        print(f"gcbulk run: {line}", file=sys.stderr)
    if blocked:
        print(
            f"gcbulk run: {len(blocked)} case(s) blocked by their findings and skipped (the plan above says why):",
            file=sys.stderr,
        )
        for title in blocked[:_SHOW_FAILED]:
            print(f"  {shown(title)}", file=sys.stderr)
        if len(blocked) > _SHOW_FAILED:
            print(f"  … and {len(blocked) - _SHOW_FAILED} more ('gcbulk status' lists them all)", file=sys.stderr)
        print("  fix the findings; the next 'gcbulk run' plans them again", file=sys.stderr)
    if outcome.requeued:
        print(f"gcbulk run: {len(outcome.requeued)} case(s) the server no longer had were sent again:", file=sys.stderr)
        for title, reason in outcome.requeued[:_SHOW_FAILED]:
            print(f"  {shown(title)}: {scrub(reason, title) if redact else reason}", file=sys.stderr)
    if outcome.orphans_aborted:
        print(
            f"gcbulk run: aborted {outcome.orphans_aborted} empty upload(s) left on the server by creates whose "
            "answer was lost",
            file=sys.stderr,
        )
    if outcome.failed:
        print(f"gcbulk run: {len(outcome.failed)} case(s) failed:", file=sys.stderr)
        for title, reason in outcome.failed[:_SHOW_FAILED]:
            print(f"  {shown(title)}: {scrub(reason, title) if redact else reason}", file=sys.stderr)
        if len(outcome.failed) > _SHOW_FAILED:
            print(
                f"  … and {len(outcome.failed) - _SHOW_FAILED} more ('gcbulk status' lists them all)", file=sys.stderr
            )
        print("  fix what the reasons say, then 'gcbulk retry-failed' queues them again", file=sys.stderr)
    print(f"gcbulk run: ledger {ledger_shown}, events {events_path}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    resolved = job_settings_with_token("run", args)
    if resolved is None:
        return EXIT_CONFIG_ERROR
    follow_mode = getattr(args, "follow", False)
    # One-shot runs keep their human lines (plan report, progress, outcome) on stderr; the container's follow mode
    # has the summary event on stdout instead.
    log_setup = logs.configure(
        resolved.log_level,
        resolved.log_format,
        secrets=[resolved.token or ""],
        progress_stream=None if follow_mode else sys.stderr,
    )
    try:
        return _run(args, resolved, JobService(resolved, display=log_setup.display))
    finally:
        log_setup.close()


def _run(args: argparse.Namespace, resolved: settings.RunSettings, service: JobService) -> int:
    service.strict = getattr(args, "strict", False)
    service.redact_titles = service.redact_titles or getattr(args, "redact_titles", False)
    try:
        if getattr(args, "follow", False):
            return follow.run_follow(service)
        show_plan = functools.partial(print_report, out=sys.stderr, redact_titles=service.redact_titles)
        outcome = anyio.run(
            service.serve, lambda s: run_once(s, replan=getattr(args, "replan", False), show_plan=show_plan)
        )
    except PlanBlocked as blocked:
        if blocked.report is None:  # a blocked plan's report said it already
            print(f"gcbulk run: {blocked}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except AuthenticationFailed:
        print(f"gcbulk run: {TOKEN_REFUSED}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except (ConfigurationError, LedgerError) as exc:
        print(f"gcbulk run: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except GcbulkError as exc:
        print(f"gcbulk run: stopped: {exc}", file=sys.stderr)
        return EXIT_SOME_FAILED
    cases = service.final_case_counts
    left = _cases_left(cases)
    if service.killed or outcome is None or outcome.interrupted:
        how = "stopped at once" if service.killed else "stopped"
        signal_name = service.stop_signal or "SIGINT"
        if outcome is not None:
            _print_outcome(
                outcome, resolved.ledger_shown, resolved.events, service.blocked_cases, service.redact_titles, cases
            )
        if cases is not None and left == 0 and not (cases.get("failed") or cases.get("blocked")):
            print(f"gcbulk run: {how} by {signal_name}, with every case done", file=sys.stderr)
            return EXIT_OK
        shown = "some cases" if cases is None else f"{left} case(s)"
        print(
            f"gcbulk run: {how} by {signal_name} with {shown} not done; everything sent so far is recorded — "
            "run it again to resume",
            file=sys.stderr,
        )
        return exit_code_for_signal(signal_name)
    _print_outcome(outcome, resolved.ledger_shown, resolved.events, service.blocked_cases, service.redact_titles, cases)
    earlier = (cases or {}).get("failed", 0) - len(outcome.failed)
    if earlier > 0:
        print(
            f"gcbulk run: {earlier} case(s) failed in an earlier run and are still failed ('gcbulk status' lists "
            "them); 'gcbulk retry-failed' queues them again",
            file=sys.stderr,
        )
    # Blocked cases are not done either: exit 1, as for failed ones, so a script sees the job is not complete.
    not_done = outcome.failed or service.blocked_cases or earlier > 0 or (cases or {}).get("blocked", 0)
    return EXIT_SOME_FAILED if not_done else EXIT_OK


def _cases_left(cases: dict[str, int] | None) -> int:
    """Cases a next run would still work on: everything planned that is not done (vanished folders are gone)."""
    if cases is None:
        return 0
    return sum(n for state, n in cases.items() if state not in ("done", "vanished"))

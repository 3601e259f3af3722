"""``gcbulk run JOB.toml``: plan the job if the ledger has no plan yet, then run every case to the end.

Exit 0 when every case is done (or the run was stopped by a signal: it resumes where it stopped), 1 when some cases
failed (listed with their reasons; ``gcbulk retry-failed`` queues them again), 2 on a configuration error (job file,
token, reader study, blocking plan findings).

The first SIGINT/SIGTERM starts nothing new and lets the parts on the wire finish for ``--drain`` seconds; every
recorded step is already in the ledger, so that is the checkpoint. A second signal stops at once — still resumable,
because every step is recorded before the next one starts.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import anyio

from engine.commands.plan import fetch_catalogue, plan_into_ledger, print_report
from engine.config import JobConfig, load_job, load_token
from engine.errors import AuthenticationFailed, ConfigurationError, GcbulkError, first_error
from engine.gc_api import GrandChallengeClient
from engine.journal import Journal, LedgerRunner
from engine.progress import EventLog, format_progress_line
from engine.transfer import RunOutcome, TransferEngine
from engine.transfer_context import EngineConfig, engine_config_from_job
from state.ledger import Ledger, LedgerError, default_ledger_path

HELP = "Run a job: plan it if needed, upload every case, create its display set and wait for the imports."
EXIT_OK, EXIT_SOME_FAILED, EXIT_CONFIG, EXIT_KILLED = 0, 1, 2, 130
_SHOW_FAILED = 50

log = logging.getLogger("gcbulk")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=Path, help="the job file (TOML)")
    parser.add_argument("--ledger", type=Path, help="the ledger file (default: <job stem>.ledger.sqlite beside the job)")
    parser.add_argument("--events", type=Path,
                        help="JSON event log, one line per state change (default: <job stem>.events.jsonl)")
    parser.add_argument("--token-file", type=Path,
                        help="read the API token from this file instead of $GRAND_CHALLENGE_AUTHORIZATION")
    parser.add_argument("--replan", action="store_true",
                        help="walk the case tree again before running (picks up new and changed files)")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="seconds in-flight parts may finish after the first stop signal (default 30)")
    parser.add_argument("--progress-interval", type=float, default=10.0,
                        help="seconds between progress lines (default 10)")


def events_path_for(job_file: Path) -> Path:
    return job_file.with_name(f"{job_file.stem}.events.jsonl")


def _ensure_plan(ledger: Ledger, config: JobConfig, token: str, replan: bool) -> bool:
    """Plans when the ledger has no finished plan (or when asked). False when the plan has blocking findings."""
    if ledger.plan_state in ("empty", "planning") or replan:
        report = plan_into_ledger(config, ledger, catalogue=fetch_catalogue(config, token))
        print_report(report, out=sys.stderr)
        return not report.blocking
    if ledger.plan_state == "blocked":
        print("gcbulk run: the last plan has blocking findings; fix them and run 'gcbulk plan' (or 'gcbulk run "
              "--replan') again", file=sys.stderr)
        return False
    return True


async def run_transfer(
    config: JobConfig, token: str, journal: Journal, engine_config: EngineConfig, *, drain_seconds: float
) -> tuple[RunOutcome | None, bool]:
    """Runs the engine under signal handling. Returns the outcome (None if it was cut) and whether a second signal
    asked to stop at once."""
    killed = False
    outcome: RunOutcome | None = None
    async with GrandChallengeClient(
        base_url=config.base_url, token=token, ca_file=config.ca_file,
        api_calls_in_flight=engine_config.api_calls_in_flight, retry_policy=engine_config.retry,
        connections=engine_config.parts_in_flight + engine_config.api_calls_in_flight + 8,
    ) as client:
        engine = TransferEngine(client=client, journal=journal, reader_study_slug=config.reader_study,
                                config=engine_config)

        async def cut_after(scope: anyio.CancelScope, seconds: float) -> None:
            await anyio.sleep(seconds)
            log.warning("drain time of %.0f s is over; stopping the parts still in flight (they resume next run)",
                        seconds)
            scope.cancel()

        async def watch_signals(scope: anyio.CancelScope, group: anyio.abc.TaskGroup) -> None:
            nonlocal killed
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    if not engine.stopping:
                        log.warning("%s: starting nothing new; letting in-flight parts finish (up to %.0f s). "
                                    "Send it again to stop at once.", signal.Signals(signum).name, drain_seconds)
                        journal.note("stop_requested", signal=signal.Signals(signum).name)
                        engine.stop()
                        group.start_soon(cut_after, scope, drain_seconds)
                    else:
                        killed = True
                        scope.cancel()
                        return

        async with anyio.create_task_group() as group:
            group.start_soon(watch_signals, group.cancel_scope, group)
            try:
                outcome = await engine.run()
            finally:
                group.cancel_scope.cancel()
    return outcome, killed


def _print_outcome(outcome: RunOutcome, ledger_path: Path, events_path: Path) -> None:
    if outcome.stats is not None:
        print(f"gcbulk run: {format_progress_line(outcome.stats)}", file=sys.stderr)
    if outcome.failed:
        print(f"gcbulk run: {len(outcome.failed)} case(s) failed:", file=sys.stderr)
        for title, reason in outcome.failed[:_SHOW_FAILED]:
            print(f"  {title}: {reason}", file=sys.stderr)
        if len(outcome.failed) > _SHOW_FAILED:
            print(f"  … and {len(outcome.failed) - _SHOW_FAILED} more ('gcbulk status' lists them all)",
                  file=sys.stderr)
        print("  fix what the reasons say, then 'gcbulk retry-failed' queues them again", file=sys.stderr)
    print(f"gcbulk run: ledger {ledger_path}, events {events_path}", file=sys.stderr)


async def _plan_and_run(config: JobConfig, token: str, args: argparse.Namespace, ledger_path: Path,
                        events_path: Path) -> tuple[bool, RunOutcome | None, bool]:
    async with LedgerRunner(ledger_path, config.binding, job_file=config.job_file) as runner:
        # Planning runs on the ledger's thread too (sqlite3 connections are bound to their thread).
        try:
            planned = await runner.run(_ensure_plan, config, token, args.replan)
        except (AuthenticationFailed, ConfigurationError):
            raise
        except GcbulkError as exc:
            print(f"gcbulk run: could not check the job's sockets at {config.base_url}: {exc}. Check the server "
                  "address and the network, then run again.", file=sys.stderr)
            return False, None, False
        if not planned:
            return False, None, False
        engine_config = engine_config_from_job(config.engine, drain_seconds=args.drain,
                                               progress_interval_seconds=args.progress_interval)
        events = EventLog(events_path)
        try:
            outcome, killed = await run_transfer(config, token, Journal(runner, events), engine_config,
                                                 drain_seconds=args.drain)
        finally:
            events.close()
    return True, outcome, killed


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("engine").setLevel(logging.WARNING)  # retries are counted in the progress line, not listed
    try:
        config = load_job(args.job)
        token = load_token(args.token_file)
        ledger_path = args.ledger or default_ledger_path(config.job_file)
        events_path = args.events or events_path_for(config.job_file)
        planned, outcome, killed = anyio.run(_plan_and_run, config, token, args, ledger_path, events_path)
        if not planned:
            return EXIT_CONFIG
    except AuthenticationFailed:
        print("gcbulk run: the server refused the API token (401); set a valid token in "
              "$GRAND_CHALLENGE_AUTHORIZATION or --token-file", file=sys.stderr)
        return EXIT_CONFIG
    except (ConfigurationError, LedgerError) as exc:
        print(f"gcbulk run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BaseExceptionGroup as group:  # an error that stopped the run, from inside a task group
        error = first_error(group)
        print(f"gcbulk run: stopped: {error}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(error, (ConfigurationError, AuthenticationFailed)) else EXIT_SOME_FAILED
    except GcbulkError as exc:
        print(f"gcbulk run: stopped: {exc}", file=sys.stderr)
        return EXIT_SOME_FAILED
    if killed:
        print("gcbulk run: stopped at once; run it again to resume", file=sys.stderr)
        return EXIT_KILLED
    if outcome is None or outcome.interrupted:
        print("gcbulk run: stopped; everything sent so far is recorded — run it again to resume", file=sys.stderr)
        if outcome is not None:
            _print_outcome(outcome, ledger_path, events_path)
        return EXIT_OK
    _print_outcome(outcome, ledger_path, events_path)
    return EXIT_SOME_FAILED if outcome.failed else EXIT_OK

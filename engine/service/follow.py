"""``gcbulk run --follow``: the long-lived mode of a container. Keeps the case tree and Grand Challenge in step until
it is told to stop.

Each round: re-plan (the planner is idempotent: new case folders become planned cases, unchanged ones cost a
``stat``), queue failed cases again once their backoff is over, and run a transfer pass if anything is runnable; then
wait for the poll interval. A case with blocking findings is skipped and the clean ones are uploaded (``--strict``:
any blocking finding holds back all); what is blocked is logged once per change, not at every poll. New folders that appear during a pass are picked up by the next round (a re-plan must not
touch cases a pass is working on).

It never exits on a transient fault — network down, a 5xx storm, the server unreachable at start, a full disk —
it logs the fault and tries again with growing backoff. It exits 0 on SIGTERM/SIGINT (after draining), 2 on a fatal
configuration error (bad token, unknown reader study, a ledger that belongs to another job), 130 on a second signal.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field

import aiohttp
import anyio

from gcbulk.engine.gc.errors import (
    AuthenticationFailed,
    ConfigurationError,
    GcbulkError,
    diagnosis,
    first_error,
)
from gcbulk.engine.plan.titles import redacted, scrub
from gcbulk.engine.service import logs
from gcbulk.engine.service.job_service import JobService
from gcbulk.engine.service.plan_recording import PlanReport
from gcbulk.exit_codes import EXIT_CONFIG_ERROR, EXIT_OK, exit_code_for_signal
from gcbulk.state.errors import LedgerDiskFull, LedgerError

# Failed cases come back after --retry-failed-after (1 min), then 2, 4 … at most hourly: a server-side cause (an
# import worker down) gets time to clear, and a case that cannot succeed costs one attempt an hour, not a storm.
FAILED_CASES_MAX_SECONDS = 3600.0
# Transient faults of a whole round (the server unreachable): from the poll interval (at most 5 s), doubling, at most
# 5 min.
FAULT_BACKOFF = (5.0, 300.0)
_TRANSIENT = (GcbulkError, OSError, aiohttp.ClientError, TimeoutError, sqlite3.OperationalError, LedgerDiskFull)


@dataclass
class Backoff:
    """Doubling delays between ``initial`` and ``maximum``; ``reset()`` after a success."""

    initial: float
    maximum: float
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


def is_fatal(error: BaseException) -> bool:
    """A configuration error: waiting does not fix it, a person must (exit 2). A full disk is not: space comes back
    (logs rotate, an operator cleans up), so follow mode waits for it with the other transient faults."""
    if isinstance(error, LedgerDiskFull):
        return False
    return isinstance(error, (ConfigurationError, AuthenticationFailed, LedgerError))


class Follower:
    def __init__(
        self, service: JobService, *, failed_backoff: Backoff | None = None, fault_backoff: Backoff | None = None
    ) -> None:
        self.service = service
        settings = service.settings
        self.failed_backoff = failed_backoff or Backoff(
            settings.retry_failed_after, max(settings.retry_failed_after, FAILED_CASES_MAX_SECONDS)
        )
        self.fault_backoff = fault_backoff or Backoff(min(FAULT_BACKOFF[0], settings.poll_interval), FAULT_BACKOFF[1])
        self.requeue_due = 0.0  # failed cases found at start are queued again at once: a restart is deliberate
        self._findings: frozenset[tuple[str, str, str]] | None = None
        self._blocked: frozenset[str] = frozenset()
        self._redact = service.redact_titles
        self._first_plan = True

    def _title(self, title: str) -> str:
        return redacted(title) if self._redact else title

    async def run(self) -> int:
        service = self.service
        while not service.stop_requested.is_set():
            try:
                await self.round()
                self.fault_backoff.reset()
            except Exception as raised:  # classified right below; anything else is a bug and propagates
                error = first_error(raised) if isinstance(raised, BaseExceptionGroup) else raised
                if is_fatal(error):
                    logs.log_event(
                        "fatal_configuration_error", level=logging.ERROR, error=str(error), message=diagnosis(error)
                    )
                    return EXIT_CONFIG_ERROR
                if not isinstance(error, _TRANSIENT):
                    raise
                delay = self.fault_backoff.next_delay()
                logs.log_event(
                    "transient_fault",
                    level=logging.WARNING,
                    error=str(error),
                    error_type=type(error).__name__,
                    retry_in_seconds=delay,
                )
                service.state.phase = "idle"
                await service.wait(delay)
                continue
            if not service.stop_requested.is_set():
                service.state.phase = "idle"
                await service.wait(service.settings.poll_interval)
        return EXIT_OK

    async def round(self) -> None:
        try:
            await self._plan_and_pass()
        finally:
            self.service.forget_study()  # a round that ran no pass leaves no listing to a later round's pass

    async def _plan_and_pass(self) -> None:
        service = self.service
        # The first round lists the study for its plan; later ones only for a new case or one blocked for its title.
        report = await service.plan(list_study_only_for_new_cases=not self._first_plan)
        self._log_plan(report)
        if report.blocking:
            return  # logged; the next round re-plans, so fixing the files is enough
        runner = service.runner
        assert runner is not None, "a round runs inside JobService.serve, with its ledger open"
        if time.monotonic() >= self.requeue_due:
            requeued = await runner.run(runner.ledger.requeue_failed_cases)
            if requeued:
                logs.log_event("failed_cases_requeued", cases=len(requeued))
        totals = await runner.run(runner.ledger.transfer_totals)
        if not totals["cases"] or service.stop_requested.is_set():
            return
        outcome = await service.run_pass()
        if outcome.failed:
            delay = self.failed_backoff.next_delay()
            self.requeue_due = time.monotonic() + delay
            logs.log_event(
                "cases_failed",
                level=logging.WARNING,
                cases=len(outcome.failed),
                retry_in_seconds=delay,
                examples=[f"{self._title(t)}: {scrub(r, t) if self._redact else r}" for t, r in outcome.failed[:5]],
            )
        elif not outcome.interrupted:
            self.failed_backoff.reset()

    def _log_plan(self, report: PlanReport) -> None:
        diff = report.diff
        blocked = frozenset(diff.blocked)
        # A blocked case is reported by every plan until it is fixed; only a change in the blocked set is news.
        blocked_changed = blocked != self._blocked
        changed = diff.new_cases or diff.requeued or diff.removed or blocked_changed or diff.changed_after_consumed
        if changed or self._first_plan:
            logs.log_event(
                "plan",
                cases=diff.cases,
                files=diff.files,
                bytes=diff.bytes,
                new=diff.new_cases,
                requeued=len(diff.requeued),
                removed=len(diff.removed),
                blocked=len(diff.blocked),
                changed_after_upload=len(diff.changed_after_consumed),
            )
        self._first_plan = False
        if blocked_changed:
            logs.log_event(
                "cases_blocked",
                level=logging.WARNING if blocked else logging.INFO,
                cases=len(blocked),
                newly_blocked=[self._title(t) for t in sorted(blocked - self._blocked)[:20]],
                unblocked=[self._title(t) for t in sorted(self._blocked - blocked)[:20]],
                message="blocked cases are skipped until their findings are fixed; the others run"
                if blocked
                else "no case is blocked any more",
            )
            self._blocked = blocked
        findings = [f for f in report.findings if f.severity != "info"]
        fingerprint = frozenset((f.severity, f.code, str(f.path)) for f in findings)
        if fingerprint == self._findings:
            return  # the same findings every poll would bury everything else in the log
        self._findings = fingerprint
        for finding in findings:
            logs.log_event(
                "finding",
                level=logging.ERROR if finding.blocking else logging.WARNING,
                severity=finding.severity,
                code=finding.code,
                path=str(finding.path),
                error=finding.message,
                fix=finding.fix,
            )
        if report.blocking:
            logs.log_event(
                "plan_blocked",
                level=logging.ERROR,
                message="blocking findings: nothing is uploaded until they are fixed; the next poll checks again",
            )


async def follow(service: JobService) -> int:
    return await Follower(service).run()


def run_follow(service: JobService) -> int:
    """Runs the long-lived mode to its end; the exit code (0 stopped by a signal, as orchestrators expect of a
    service; 2 fatal configuration error; 130 / 143 stopped at once by a second SIGINT / SIGTERM)."""
    code = anyio.run(service.serve, follow)
    if service.killed:
        return exit_code_for_signal(service.stop_signal or "SIGINT")
    return EXIT_OK if code is None else code

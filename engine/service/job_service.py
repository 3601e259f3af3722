"""The resources one job holds while it runs, for ``gcbulk run`` and ``gcbulk run --follow`` alike.

``JobService.serve(body)`` opens, in order: the Grand Challenge client (one pooled session, latency traced for the
metrics), the monitoring endpoints (``engine/service/health.py``; first, so ``/healthz`` answers while the ledger is still
being opened or planned), the ledger on its own thread (``gcbulk.engine.upload.journal.LedgerRunner``), the summary line and the
signal watcher; then it runs ``body(service)`` and closes everything in reverse.

Signals, as ``gcbulk run`` has always handled them: the first SIGINT/SIGTERM starts nothing new; a transfer pass in
progress lets its in-flight parts finish for the drain time, then is cut (everything recorded is already in the
ledger, so that is the checkpoint); with no pass in progress the service stops at once. A second signal stops at
once, still resumable.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import (
    AuthenticationFailed,
    ConfigurationError,
    GcbulkError,
    first_error,
)
from gcbulk.engine.gc.retry import RetryBudget, item_budget
from gcbulk.engine.gc.targets import target_for
from gcbulk.engine.plan.findings import TITLE_TAKEN
from gcbulk.engine.service import logs
from gcbulk.engine.service.ledger_time import check_not_behind_event_log
from gcbulk.engine.service.metrics import (
    Metrics,
    RunState,
    read_job_counts,
    retry_reason,
)
from gcbulk.engine.service.plan_recording import PlanReport, plan_into_ledger
from gcbulk.engine.service.waits import WaitRecorder
from gcbulk.engine.settings import RunSettings
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import TransferStats
from gcbulk.engine.upload.reconcile import StudyListing, read_study
from gcbulk.engine.upload.transfer import RunOutcome, TransferEngine

if TYPE_CHECKING:
    from gcbulk.engine.service.health import MonitoringServer

log = logging.getLogger("gcbulk")
T = TypeVar("T")
PLAN_CHECK_RETRIES = 2
LEDGER_COUNT_SECONDS = 30.0  # the closing count of cases by state waits this long for a busy ledger


class JobService:
    def __init__(self, settings: RunSettings, *, display: Any = None, watch_signals: bool = True) -> None:
        # False where this is not the main thread's loop (the Python API in a notebook): signals cannot be watched.
        self.watch_signals = watch_signals
        self.settings = settings
        self.job = settings.job
        self.worker_id = settings.worker_id
        self.state = RunState(
            reader_study=self.job.target.ledger_key, base_url=self.job.base_url, worker_id=self.worker_id
        )
        self.metrics = Metrics(self.state)
        self.transfer_settings = settings.transfer
        self.display = display  # gcbulk.engine.service.display.ProgressDisplay on a terminal
        self.stop_requested: anyio.Event  # made in serve(): anyio primitives belong to the running loop
        self.killed = False
        # The signal that stopped the service ("SIGINT", "SIGTERM"), None when nothing did: a one-shot run's exit code
        # (130 or 143 with work left, gcbulk/exit_codes.py).
        self.stop_signal: str | None = None
        # The ledger's cases by state when the service closed it (None: it could not be read): what the exit code of a
        # one-shot run says, whatever this process's pass did.
        self.final_case_counts: dict[str, int] | None = None
        self.strict = False  # --strict: any blocking finding holds back every case (default: only its own case)
        self.blocked_cases: list[str] = []  # titles the last plan blocked (skipped by the pass)
        # cases.redact_titles / --redact-titles: logs and events show title#<hash> (the ledger keeps the titles)
        self.redact_titles = self.job.cases.redact_titles
        self.client: GrandChallengeClient | None = None
        self.runner: LedgerRunner | None = None
        self.journal: Journal | None = None
        self._engine: TransferEngine | None = None
        self._study: StudyListing | None = None  # the plan's listing of the study (in the ledger), for the next pass
        self._pass_done: anyio.Event | None = None
        self._work: anyio.CancelScope
        self._tasks: anyio.abc.TaskGroup | None = None

    # ---- lifetime ----------------------------------------------------------------------------------------------

    async def serve(self, body: Callable[[JobService], Awaitable[T]]) -> T | None:
        """Runs ``body`` with everything open; None when a signal cut it short."""
        config = self.transfer_settings
        result: T | None = None
        self.stop_requested = anyio.Event()
        self._work = anyio.CancelScope()
        async with GrandChallengeClient(
            base_url=self.job.base_url,
            token=self.settings.require_token(),
            ca_file=self.job.ca_file,
            api_calls_in_flight=config.api_calls_in_flight,
            adaptive_concurrency=config.adaptive_concurrency,
            retry_policy=config.retry,
            connections=config.parts_in_flight + config.api_calls_in_flight + 8,
            # Every pass gets fresh statistics; API retries go to the pass in progress.
            on_retry=self._count_retry,
            trace_configs=[self.metrics.trace_config()],
        ) as client:
            self.client = client
            server = await self._start_monitoring(client)
            events = logs.ConsoleEventLog(self.settings.events)
            self.state.waits = WaitRecorder(events).install()  # the server's waits: event file and /status
            try:
                async with _first_error_unwrapped(), anyio.create_task_group() as tasks:
                    self._tasks = tasks
                    if self.watch_signals:
                        tasks.start_soon(self._watch_signals)
                    tasks.start_soon(self._summaries)
                    with self._work:
                        async with LedgerRunner(
                            self.settings.ledger, self.job.binding, job_file=self.job.job_file
                        ) as runner:
                            self.runner = self.state.runner = runner
                            self.journal = Journal(runner, events, redact_titles=self.redact_titles)
                            try:
                                result = await body(self)
                            finally:
                                with anyio.CancelScope(shield=True):  # the last word: where the job stands
                                    self.final_case_counts = await self._case_counts(runner)
                                    await self.log_summary()
                                self.state.runner = None
                    tasks.cancel_scope.cancel()
            finally:
                self.state.waits.close()
                self.state.waits = None
                events.close()
                if server is not None:
                    await server.stop()
        return result

    @staticmethod
    async def _case_counts(runner: LedgerRunner) -> dict[str, int] | None:
        try:
            with anyio.fail_after(LEDGER_COUNT_SECONDS):
                return (await runner.run(runner.ledger.counts_by_state)).get("case", {})
        except Exception as exc:  # noqa: BLE001 - a ledger that failed already said so; the exit code says "unknown"
            log.debug("could not read the cases' states at the end: %s", exc)
            return None

    async def _start_monitoring(self, client: GrandChallengeClient) -> MonitoringServer | None:
        address = self.settings.metrics_address
        if address is None:
            return None
        # Imported here: aiohttp's web server and the status page cost ~0.05 s of CPU at start-up that a run with
        # --metrics-address off (a batch job, a benchmark) does not pay (tests/packaging/test_startup_imports.py).
        from gcbulk.engine.service.health import MonitoringServer, ServerCheck
        from gcbulk.engine.service.status_page import StatusPage

        async def probe() -> None:
            # docs/gc-api.md §0: GET gcapi/ needs no token and is the cheapest "the server answers" there is.
            async with client.session.get(client.url_for("gcapi/")) as response:
                response.raise_for_status()

        status = StatusPage(
            self.state, ledger_path=self.settings.ledger, events_path=self.settings.events, redact=self.redact_titles
        )
        server = MonitoringServer(self.metrics, self.state, address, ServerCheck(probe), status_page=status)
        try:
            bound = await server.start()
        except OSError as exc:
            if self.settings.sources.get("metrics_address") == "default":
                # Nobody asked for this address: a second run on the same machine must not fail over a port.
                logs.log_event(
                    "monitoring_unavailable",
                    level=logging.WARNING,
                    address=str(address),
                    error=exc.strerror or str(exc),
                    message="running without /metrics, /healthz, /readyz and /status; set GCBULK_METRICS_ADDRESS "
                    "(or --metrics-address) to a free host:port",
                )
                return None
            raise ConfigurationError(
                f"cannot serve metrics on {address}: {exc.strerror or exc}; set "
                "GCBULK_METRICS_ADDRESS (or --metrics-address) to a free host:port, or off"
            ) from None
        logs.log_event(
            "monitoring_started",
            level=logging.INFO,
            address=f"http://{bound}",
            endpoints=["/metrics", "/healthz", "/readyz", "/status"],
        )
        return server

    # ---- signals and waiting ----------------------------------------------------------------------------------

    async def _watch_signals(self) -> None:
        if sys.platform == "win32":
            # asyncio on Windows cannot receive signals (no loop.add_signal_handler): Ctrl-C there raises
            # KeyboardInterrupt, which stops the run at once, without the drain — still resumable from the ledger.
            return
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.stop_requested.is_set():
                    self.stop_now(name)
                    return
                self.request_stop(name)

    def request_stop(self, reason: str) -> None:
        """What the first SIGINT/SIGTERM does: start nothing new. A pass in progress lets its in-flight parts finish
        for the drain time; without one, the service stops at once (there is nothing to drain)."""
        if self.stop_requested.is_set():
            return
        self.stop_signal = reason
        self.stop_requested.set()
        self.state.phase = "stopping"
        engine, pass_done = self._engine, self._pass_done
        if engine is None or pass_done is None:
            self._note("stop_requested", signal=reason, drain_seconds=0)
            self._work.cancel()
            return
        message = (
            f"{reason}: starting nothing new; letting in-flight parts finish (up to "
            f"{self.settings.drain:.0f} s). Send it again to stop at once."
        )
        self._note("stop_requested", signal=reason, drain_seconds=self.settings.drain, message=message)
        print(f"gcbulk run: {message}", file=sys.stderr)  # for the person who pressed Ctrl-C
        engine.stop()
        assert self._tasks is not None
        self._tasks.start_soon(self._cut_after_drain, pass_done)  # beside the watcher, which awaits a second signal

    def stop_now(self, reason: str) -> None:
        """What the second signal does: stop at once. Every recorded step is in the ledger, so it still resumes."""
        self._note("stopping_now", signal=reason)
        self.stop_signal = reason
        self.killed = True
        self._work.cancel()

    def _note(self, event: str, **fields: Any) -> None:
        """An event in the event file (when the ledger is open) and on stdout."""
        if self.journal is not None:
            self.journal.note(event, **fields)
        else:
            logs.log_event(event, **fields)

    async def _cut_after_drain(self, pass_done: anyio.Event) -> None:
        with anyio.move_on_after(self.settings.drain):
            await pass_done.wait()
            return
        log.warning(
            "drain time of %.0f s is over; stopping the parts still in flight (they resume next run)",
            self.settings.drain,
        )
        self._work.cancel()

    async def wait(self, seconds: float) -> None:
        """Sleeps up to ``seconds``; returns early when a stop is requested."""
        with anyio.move_on_after(seconds):
            await self.stop_requested.wait()

    # ---- the work -----------------------------------------------------------------------------------------------

    async def plan(self, *, list_study_only_for_new_cases: bool = False) -> PlanReport:
        """Plans (or re-plans: the planner is idempotent and only records what changed) on the ledger's thread.

        The socket catalogue is asked for at every plan, not cached: a socket created on Grand Challenge while a
        follow-mode run waits must be seen at the next poll. The study is listed for the plan's title check first,
        unless ``list_study_only_for_new_cases``: then the plan checks titles against the study's last listing on
        this ledger, and only a plan that finds a new case, or one blocked for its title, lists the study and plans
        again (with every file's checks then in the ledger, that second plan reads nothing). A follow-mode round that
        finds nothing new sends no listing of the study: at 100 000 display sets that is 100 requests and minutes of
        the server's web workers (docs/gc-api.md §10, the capacity profile's price of a list page)."""
        assert self.client is not None and self.runner is not None
        self.state.phase = "planning"
        catalogue: dict[str, dict[str, Any] | None] = {}
        # A planning check fails fast when the server is unreachable rather than spend a transfer's retry budget;
        # the caller decides what then (one-shot: exit; follow: wait and try again).
        with item_budget(RetryBudget(PLAN_CHECK_RETRIES, "checking the job's sockets")):
            for slug in self.job.socket_slugs:  # fresh at every plan; the pass that follows reads them from here
                catalogue[slug] = await self.client.refresh_socket(slug)
        check_titles = not self.settings.adopt_existing
        if not check_titles:
            return await self._plan_into_ledger(catalogue)
        if list_study_only_for_new_cases:
            first = await self._plan_into_ledger(catalogue, check_titles=True)
            if not first.diff.new_cases and not any(finding.code == TITLE_TAKEN for finding in first.findings):
                # The cases planned before were checked when they were new (a title someone takes since is refused
                # by the server at the create, and the case fails saying so), and no case is blocked for a title that
                # a newer listing could free. A case blocked for its files lists nothing: a migration's few broken
                # cases must not bring back a listing of the study at every poll.
                return first
        else:
            first = None
        await self._list_study()
        report = _as_one_plan(first, await self._plan_into_ledger(catalogue, check_titles=True))
        if report.diff.blocked:
            # Cases blocked for a display set "someone else made": unless the event log says this job made it (a
            # ledger that went back in time), in which case the command stops and says how to recover.
            foreign = await self.runner.run(self.runner.ledger.foreign_display_set_titles)
            suspects = foreign.keys() & set(report.diff.blocked)
            if suspects:
                await anyio.to_thread.run_sync(
                    check_not_behind_event_log, self.settings.ledger_shown, self.settings.events, suspects
                )
        return report

    async def _list_study(self) -> None:
        """The study's titles: a case whose title names a display set this job did not make is blocked before any
        byte is sent (docs/gc-api.md §10), unless the run takes such display sets over. The same listing serves the
        pass that follows (engine/upload/reconcile.py): one per plan, not two."""
        assert self.client is not None and self.runner is not None
        with item_budget(RetryBudget(PLAN_CHECK_RETRIES, "listing the study's display sets")):
            self._study = await read_study(target_for(self.client, self.job.target), self.runner)

    async def _plan_into_ledger(
        self, catalogue: dict[str, dict[str, Any] | None], *, check_titles: bool = False
    ) -> PlanReport:
        assert self.runner is not None
        job = self.job
        strict = self.strict
        # The content checks' results persist in the ledger (engine/service/content_cache.py): a poll re-reads only
        # files that changed, and this process keeps nothing per file between plans.
        return await self.runner.with_ledger(
            lambda ledger: plan_into_ledger(
                job,
                ledger,
                catalogue=catalogue,
                strict=strict,
                check_titles_against_listing=check_titles,
            )
        )

    def forget_study(self) -> None:
        """Lets go of the plan's study listing when no pass follows that plan (follow mode: nothing new, or blocked): a
        pass of a later round must not take a listing older than its own plan's."""
        self._study = None

    async def run_pass(self) -> RunOutcome:
        """One transfer pass over every runnable case (``gcbulk.engine.upload.transfer.TransferEngine.run``)."""
        assert self.client is not None and self.journal is not None
        stats = self.state.new_stats()
        engine = TransferEngine(
            client=self.client,
            journal=self.journal,
            target=self.job.target,
            config=self.transfer_settings,
            stats=stats,
            study=self._study,
            worker_id=self.worker_id,
        )
        self._study = None  # used once: a later pass reads the study again
        self._engine, self.state.stats, self.state.engine = engine, stats, engine
        self._pass_done = anyio.Event()
        self.state.phase = "running"
        self.state.passes += 1
        if self.stop_requested.is_set():
            engine.stop()
        try:
            return await engine.run()
        finally:
            self._pass_done.set()
            self.state.pass_finished()
            self._engine = self._pass_done = None
            if not self.stop_requested.is_set():
                self.state.phase = "idle"

    def _count_retry(self, *args: object) -> None:
        stats = self.state.stats
        if stats is not None:
            stats.count_retry(*args)
        else:  # a retry before the first pass (planning against a server that is down)
            error = args[1] if len(args) > 1 and isinstance(args[1], BaseException) else None
            self.state.count_retry_reason(retry_reason(error))

    # ---- the summary line ---------------------------------------------------------------------------------------

    async def _summaries(self) -> None:
        while True:
            await anyio.sleep(self.settings.progress_interval)
            await self.log_summary()

    async def log_summary(self) -> dict[str, Any]:
        counts = await read_job_counts(self.state)
        snapshot = (self.state.stats or TransferStats()).snapshot()
        fields = logs.log_summary(
            snapshot,
            counts.by_state.get("case", {}) if counts else {},
            transferring=self.state.engine is not None,
            phase=self.state.phase,
            bytes_sent=self.state.bytes_sent(),
            retries=sum(self.state.retries_by_reason.values()),
        )  # the process's, all passes
        if self.display is not None:
            self.display.update(fields)
        return fields


@contextlib.asynccontextmanager
async def _first_error_unwrapped() -> AsyncIterator[None]:
    """anyio groups every error of a task group; callers want the one that stopped the run (an exit code per kind)."""
    try:
        yield
    except BaseExceptionGroup as group:
        raise first_error(group) from None


class PlanBlocked(Exception):
    """Nothing is uploaded: the job's plan has blocking findings (``report``), or its sockets could not be read
    (``report`` is None). The message says which and what to do."""

    def __init__(self, message: str, report: PlanReport | None = None) -> None:
        super().__init__(message)
        self.report = report


async def run_once(
    service: JobService, *, replan: bool = True, show_plan: Callable[[PlanReport], None] | None = None
) -> RunOutcome:
    """``gcbulk run`` without ``--follow``: plan (a re-walk of the tree: the planner is idempotent and records only
    what changed, so new and vanished case folders are picked up without ``--replan``), hand the report to
    ``show_plan`` (the CLI prints it), then one pass over the runnable cases. Blocked cases are skipped and listed.
    Raises PlanBlocked when nothing may run."""
    assert service.runner is not None
    del replan  # every run re-plans now; the flag stays accepted for scripts that pass it
    try:
        report = await service.plan()
    except (AuthenticationFailed, ConfigurationError):
        raise
    except GcbulkError as exc:
        raise PlanBlocked(
            f"could not check the job's sockets at {service.job.base_url}: {exc}. Check the server address and the "
            "network, then run again."
        ) from None
    if show_plan is not None:
        show_plan(report)
    if report.blocking:
        raise PlanBlocked(
            "the plan has blocking findings (the plan report lists them): nothing is uploaded until they are fixed",
            report,
        )
    service.blocked_cases = list(report.diff.blocked)
    return await service.run_pass()


def _as_one_plan(first: PlanReport | None, again: PlanReport) -> PlanReport:
    """``again``, the plan after the study was listed, saying also what ``first`` (the plan before it, if any)
    changed: the round's new, re-queued and removed cases are ``first``'s, and its files read are both plans'."""
    if first is None:
        return again
    diff = again.diff
    diff.new_cases += first.diff.new_cases
    diff.requeued = [*first.diff.requeued, *diff.requeued]
    diff.removed = [*first.diff.removed, *diff.removed]
    diff.changed_after_consumed = [*first.diff.changed_after_consumed, *diff.changed_after_consumed]
    again.content_files_read += first.content_files_read
    again.planner_files_read += first.planner_files_read
    again.cache_rows_forgotten += first.cache_rows_forgotten
    return again

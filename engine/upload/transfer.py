"""The transfer engine: runs the ledger's runnable cases to the end, within the client's and the server's limits.

``TransferEngine.run()`` feeds cases from the ledger (streamed, so a million cases cost no memory) into an anyio task
group, bounded by ``cases_in_flight``; each case runs ``CaseUpload`` (``engine/upload/case_upload.py``), which runs a
``FileUpload`` per file (``engine/upload/file_upload.py``). Cases are claimed one at a time with a lease
(``engine/upload/leases.py``), so several workers on one PostgreSQL ledger never run one case twice — and, beside
other workers, only as many as this one can start on (``engine/upload/claim_pacing.py``); their server limits are
shared through the ledger (``engine/upload/shared_limits.py``). Each case's API requests queue behind those of the
cases claimed before it (``request_rank``, ``engine/gc/pacer.py``). A stop request (``stop()``, from the first SIGINT/SIGTERM) starts
nothing new — no case, no file, no part — and lets what is on the wire finish; the caller cuts the rest after the
drain time by cancelling. Nothing is aborted on the server on the way out: open uploads are what resume needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

import anyio

from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import (
    Disposition,
    GcbulkError,
    Interrupted,
    classify,
    first_error,
)
from gcbulk.engine.gc.pacer import case_rank, request_rank
from gcbulk.engine.gc.retry import backoffs_end_on
from gcbulk.engine.gc.target_ref import TargetRef
from gcbulk.engine.gc.targets import target_for
from gcbulk.engine.ledger_location import default_worker_id
from gcbulk.engine.upload.case_upload import CaseUpload, DisplaySetIndex
from gcbulk.engine.upload.claim_pacing import CLAIM_AHEAD, ClaimPacer
from gcbulk.engine.upload.context import TransferContext
from gcbulk.engine.upload.dicom_image_set import release_staging_left_behind
from gcbulk.engine.upload.imports import UploadSessionIndex
from gcbulk.engine.upload.journal import Journal
from gcbulk.engine.upload.leases import CaseLeases, Published
from gcbulk.engine.upload.orphans import abort_orphan_uploads
from gcbulk.engine.upload.outcome import CaseResult
from gcbulk.engine.upload.progress import (
    StatsSnapshot,
    TransferStats,
    format_progress_line,
)
from gcbulk.engine.upload.reconcile import (
    StudyListing,
    assign_create_orders,
    read_study,
    reconcile_with_server,
)
from gcbulk.engine.upload.server_limits import VOICE_SECONDS, CountingGate, UnitGate
from gcbulk.engine.upload.shared_limits import SharedGate, share_latency_floors
from gcbulk.engine.upload.transfer_settings import TransferSettings

log = logging.getLogger(__name__)
# The periodic progress line has its own logger: shown even when the engine's own chatter (retries) is quieted.
progress_log = logging.getLogger("gcbulk.progress")


@dataclass
class RunOutcome:
    done: int = 0
    failed: list[CaseResult] = field(default_factory=list)  # each with the reason the ledger holds
    interrupted: bool = False
    stats: StatsSnapshot | None = None
    # Cases the server no longer had (display set or values gone), sent again.
    requeued: list[CaseResult] = field(default_factory=list)
    orphans_aborted: int = 0


class TransferEngine:
    def __init__(
        self,
        *,
        client: GrandChallengeClient,
        journal: Journal,
        target: TargetRef,
        config: TransferSettings,
        stats: TransferStats | None = None,
        study: StudyListing | None = None,
        worker_id: str | None = None,
        leases: CaseLeases | None = None,
    ) -> None:
        self.client = client
        self._study = study  # the study as the plan just listed it into the ledger: the pass does not list it again
        self.journal = journal
        self.config = config
        self.stats = stats or TransferStats()
        if client.on_retry is None:  # API retries count in the run's statistics, like part retries
            client.on_retry = self.stats.count_retry
        self.target = target_for(client, target)  # a reader study's display sets or an archive's items
        self._stop_requested = anyio.Event()
        self._context: TransferContext | None = None
        self.leases = leases or CaseLeases(
            journal, worker_id or default_worker_id(), on_heartbeat=self._publish, lease_seconds=config.lease_seconds
        )
        self._shared = False  # several workers may share the job (a PostgreSQL ledger)

    def stop(self) -> None:
        """Start nothing new; what is in flight may finish."""
        self._stop_requested.set()
        if self._context is not None:
            self._context.stop()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    @property
    def context(self) -> TransferContext | None:
        """What the run in progress shares (its limiters show what is in flight: engine/service/metrics.py reads them)."""
        return self._context

    async def _add_runnable_totals(self) -> None:
        """Adds what the runnable cases hold to the pass's totals: after the first look at the server (so the cases
        it re-queued count), and again after the last look re-queues more (only those are runnable then). Totals
        thus cover every case the pass works on, and "done" never exceeds them."""
        totals = await self.journal.read(self.journal.ledger.transfer_totals)
        self.stats.cases_total += totals["cases"]
        self.stats.files_total += totals["files"]
        self.stats.bytes_total += totals["bytes"]
        # Bytes already on S3 from an earlier run count as done, so the ETA covers only what is left.
        self.stats.add_resumed(totals["bytes_sent"])

    async def _context_for_run(self) -> TransferContext:
        # docs/gc-api.md §1: the cap counts every upload the user has, including other tools' and this job's orphans.
        on_server = await self.client.count_uploads()
        shared = self._shared
        local_uploads = CountingGate(
            self.config.live_upload_ceiling,
            held=0 if shared else on_server,
            name="live uploads",
            why="uploads are freed as the server imports them, or by its 24 h sweep (docs/gc-api.md §1)",
            recount=None if shared else self.client.count_uploads,
            wait_timeout=self.config.limit_wait_timeout_seconds,
        )
        room = local_uploads  # cases waiting for room here are named by `status` and the progress line
        self.stats.room_waits = lambda: (room.waiting, VOICE_SECONDS)
        local_imports = CountingGate(
            self.config.imports_in_flight,
            name="imports in flight",
            why="each image value is one import on the server (docs/gc-api.md §2)",
            wait_timeout=self.config.limit_wait_timeout_seconds,
        )
        upload_gate: UnitGate
        import_gate: UnitGate
        if shared:  # the server's limits hold for the job's workers together
            across_workers = partial(
                SharedGate,
                journal=self.journal,
                worker_id=self.leases.worker_id,
                lease_seconds=self.leases.lease_seconds,
                wait_timeout=self.config.limit_wait_timeout_seconds,
            )
            shared_uploads = across_workers(local_uploads, recount=self.client.count_uploads)
            await shared_uploads.set_external(on_server)
            upload_gate, import_gate = shared_uploads, across_workers(local_imports)
        else:
            upload_gate, import_gate = local_uploads, local_imports
        context = TransferContext(
            client=self.client,
            journal=self.journal,
            config=self.config,
            stats=self.stats,
            target=self.target,
            upload_gate=upload_gate,
            import_gate=import_gate,
        )
        if shared:  # a worker joining a job starts from what the others measured (latency floors, no slow start)
            workers = await self.journal.read(self.journal.ledger.workers_view, lease_seconds=self.leases.lease_seconds)
            share_latency_floors(self.client.api_limiter, context.import_pacer, self.leases.worker_id, workers)
        self.stats.limits = lambda: (self.client.api_limiter.limit, context.import_pacer.limit)
        if self.stopping:
            context.stop()
        return context

    async def run(self) -> RunOutcome:
        """Runs every runnable case; returns what happened. Raises on a stop-run error (e.g. a bad token)."""
        await self.target.lookup()  # a wrong slug stops here, clearly
        await self.target.require_writer(consequence="nothing was uploaded")
        self._shared = await self.journal.read(self.journal.ledger.shared_by_workers)
        await self.leases.start()
        try:
            return await self._run_as_worker()
        finally:
            await self.leases.stop()

    async def _run_as_worker(self) -> RunOutcome:
        ctx = self._context = await self._context_for_run()
        await release_staging_left_behind(ctx)
        with backoffs_end_on(ctx.stopping):  # a stop does not wait out retries that only sleep
            return await self._run_cases_of_pass(ctx)

    async def _run_cases_of_pass(self, ctx: TransferContext) -> RunOutcome:
        outcome = RunOutcome()
        study = self._study or await read_study(self.target, self.journal.runner)
        self._study = None  # used once: the end of the pass lists the study again
        await self._settle_with_server(study, outcome)
        await self._add_runnable_totals()
        sessions = UploadSessionIndex(self.client, min_interval=self.config.session_scan_interval_seconds)
        await self._run_cases(ctx, sessions, await self._display_sets_to_find_again(), outcome)
        if not ctx.stopping.is_set() and (outcome.done or outcome.failed):
            # The end of the run looks again: what the server lost meanwhile is sent once more, now.
            lost = len(outcome.requeued)
            try:
                await self._settle_with_server(await read_study(self.target, self.journal.runner), outcome)
            except GcbulkError as unsure:  # the cases' own outcome stands; the next run or `gcbulk verify` looks
                if classify(unsure) is Disposition.STOP_RUN:
                    raise
                log.warning(
                    "could not compare the ledger with the server at the end of the run (%s); the next "
                    "run does, or 'gcbulk verify'",
                    unsure,
                )
            if len(outcome.requeued) > lost and not ctx.stopping.is_set():
                await self._add_runnable_totals()
                again = RunOutcome()
                await self._run_cases(ctx, sessions, await self._display_sets_to_find_again(), again)
                outcome.done += again.done - (len(outcome.requeued) - lost)
                outcome.failed += again.failed
        outcome.interrupted = ctx.stopping.is_set()
        outcome.stats = self.stats.snapshot()
        self.journal.note_fields(
            "run_finished",
            {
                "done": outcome.done,
                "failed": len(outcome.failed),
                "interrupted": outcome.interrupted,
                "requeued": len(outcome.requeued),
                "api_requests": self.client.requests_answered,
                **_stats_fields(outcome.stats),
            },
        )
        return outcome

    async def _display_sets_to_find_again(self) -> DisplaySetIndex:
        """The study's last listing, narrowed to the titles of this job's cases with no display set recorded: a
        display set whose create answer was lost in a crash is found again by its title (or, with --adopt-existing,
        someone else's is taken over). Few, held for the pass; the whole listing stays in the ledger."""
        return DisplaySetIndex(await self.journal.read(self.journal.ledger.listed_display_sets_of_cases_without_one))

    async def _settle_with_server(self, study: StudyListing, outcome: RunOutcome) -> None:
        """Before and after the cases: re-queue what the server lost, abort this job's orphan uploads, and fix the
        ``order`` of the display sets still to create."""
        # Cases other live workers hold are theirs to settle: their steps look at the server themselves.
        held = await self.journal.read(self.journal.ledger.cases_leased_elsewhere, self.leases.worker_id)
        found = await reconcile_with_server(self.target, self.journal, study, skip_cases=held)
        outcome.requeued += found.display_sets_gone + found.values_gone
        try:
            sweep = await abort_orphan_uploads(self.client, self.journal, worker_id=self.leases.worker_id)
            outcome.orphans_aborted += len(sweep.aborted)
        except GcbulkError as unsure:  # they only count against the cap until the sweep: not worth stopping for
            if classify(unsure) is Disposition.STOP_RUN:
                raise
            log.warning("could not look for uploads whose create answer was lost (%s); the next run will", unsure)
        await assign_create_orders(self.journal, study)

    async def _run_cases(
        self, ctx: TransferContext, sessions: UploadSessionIndex, display_sets: DisplaySetIndex, outcome: RunOutcome
    ) -> None:
        cases_limiter = anyio.CapacityLimiter(self.config.case_slots)

        leases = self.leases

        leases.new_pass()

        # Beside other workers, claim only what this worker can start on (engine/upload/claim_pacing.py).
        pacer = ClaimPacer(CLAIM_AHEAD if self._shared else None)

        async def run_case(case_id: int, borrower: object) -> None:
            ended = False
            # The web workers serve this case's requests before those of cases claimed after it (lower ids are
            # claimed first; a takeover's older id lets the half-done case finish first).
            request_rank.set(case_rank(case_id))
            try:
                # leases.scope: cancelled if another worker took the case over (a lost lease)
                with pacer.case(), leases.scope(case_id):
                    case = CaseUpload(
                        ctx, await ctx.journal.read(ctx.journal.ledger.case_work, case_id), sessions, display_sets
                    )
                    if await case.run():
                        outcome.done += 1
                    else:
                        row = await ctx.journal.read(ctx.journal.ledger.case_work, case_id)
                        outcome.failed.append(CaseResult(row.title, row.last_error or "failed"))
                    ended = True
            except Interrupted:
                pass  # stopped on request: the case stays 'running' and resumes next time (here or elsewhere)
            finally:
                cases_limiter.release_on_behalf_of(borrower)
                await leases.finished(case_id, ended=ended)

        try:
            async with anyio.create_task_group() as group:
                reporter, heartbeat = anyio.CancelScope(), anyio.CancelScope()
                group.start_soon(self._report_progress, reporter)
                group.start_soon(leases.heartbeat_forever, heartbeat)
                try:
                    async with anyio.create_task_group() as cases:
                        while True:
                            borrower = object()
                            await cases_limiter.acquire_on_behalf_of(borrower)
                            await pacer.before_claim()
                            case_id = await leases.next_case(ctx.stopping)
                            if case_id is None:
                                pacer.unclaimed()
                                cases_limiter.release_on_behalf_of(borrower)
                                break
                            cases.start_soon(run_case, case_id, borrower)
                finally:
                    reporter.cancel()
                    heartbeat.cancel()
        except BaseExceptionGroup as group_error:
            error = first_error(group_error)
            if classify(error) is not Disposition.INTERRUPTED:
                raise error from None

    async def _publish(self) -> Published:
        """At each heartbeat: released units reach the ledger, this worker learns against the job's latency floors,
        and its limits, floors and counters are published for the others, ``status`` and ``/metrics``."""
        ctx = self._context
        if ctx is None:
            return Published()
        if self._shared:
            for gate in (ctx.upload_gate, ctx.import_gate):
                await gate.sync()  # type: ignore[attr-defined]  # a SharedGate when shared
            rows = await self.journal.read(self.journal.ledger.workers_view, lease_seconds=self.leases.lease_seconds)
            share_latency_floors(self.client.api_limiter, ctx.import_pacer, self.leases.worker_id, rows)
        return Published(
            api_limit=self.client.api_limiter.limit,
            imports_limit=ctx.import_pacer.limit,
            progress=_stats_fields(self.stats.snapshot())
            | {
                "api_floors": self.client.api_limiter.state.window_floors,
                "import_floors": ctx.import_pacer.state.window_floors,
            },
        )

    async def _report_progress(self, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await anyio.sleep(self.config.progress_interval_seconds)
                snapshot = self.stats.snapshot()
                progress_log.info("%s", format_progress_line(snapshot))
                self.journal.note_fields("progress", _stats_fields(snapshot))


def _stats_fields(snapshot: StatsSnapshot) -> dict[str, object]:
    return {k: v for k, v in snapshot.as_dict().items() if k != "elapsed_seconds"} | {
        "elapsed_seconds": round(snapshot.elapsed_seconds, 3)
    }

"""Running a copy (``engine/service/copy_job.py``): list the source, plan it into the ledger, run the transfer
engine into the target — or, for a dry run, say what would be created and write nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.targets import target_for
from gcbulk.engine.ledger_location import default_events
from gcbulk.engine.plan.cases import PlannedCase
from gcbulk.engine.service.copy_job import CopyJob, copy_cases
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import EventLog
from gcbulk.engine.upload.reconcile import read_study
from gcbulk.engine.upload.transfer import RunOutcome, TransferEngine
from gcbulk.state.ledger import Ledger, default_ledger_path
from gcbulk.state.records import PlanDiff
from gcbulk.state.replan import planning

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CopyPreview:
    """A dry run: the cases the copy would make, and those whose title the target already holds."""

    cases: list[PlannedCase]
    present: frozenset[str]  # titles already in the target (made by an earlier run of this copy, or by someone else)

    @property
    def to_create(self) -> list[PlannedCase]:
        return [case for case in self.cases if case.title not in self.present]


@dataclass(frozen=True)
class CopyOutcome:
    planned: PlanDiff
    run: RunOutcome


def copy_client(job: CopyJob, token: str) -> GrandChallengeClient:
    return GrandChallengeClient(base_url=job.base_url, token=token, ca_file=job.ca_file, retry_policy=job.engine.retry)


async def _planned(client: GrandChallengeClient, job: CopyJob) -> list[PlannedCase]:
    source = target_for(client, job.source)
    await source.lookup()  # a wrong slug or no access is said here, naming the source
    log.info("listing %s", job.source.label)
    return copy_cases(job, [container async for container in source.iterate_containers()])


async def preview_copy(client: GrandChallengeClient, job: CopyJob) -> CopyPreview:
    """What a copy would create; only GETs are sent."""
    cases = await _planned(client, job)
    target = target_for(client, job.target)
    await target.lookup()
    return CopyPreview(cases, frozenset((await read_study(target)).pk_by_title))


def _record_plan(ledger: Ledger, job: CopyJob, cases: list[PlannedCase]) -> PlanDiff:
    with planning(ledger, rules=job.record(), job_file=job.job_file) as plan:
        for case in cases:
            plan.add(case)
        diff: PlanDiff = plan.finish()
    return diff


async def run_copy(
    client: GrandChallengeClient, job: CopyJob, *, ledger_path: Path | None = None, events_path: Path | None = None
) -> CopyOutcome:
    """Plans the copy into its ledger (beside the job file unless given) and runs it; a copy killed at any moment
    resumes from that ledger, with no second container per case."""
    cases = await _planned(client, job)
    path = ledger_path or default_ledger_path(job.job_file)
    events = EventLog(events_path or default_events(path, job.job_file))
    try:
        async with LedgerRunner(path, job.binding, job_file=job.job_file) as runner:
            diff = await runner.with_ledger(_record_plan, job, cases)
            engine = TransferEngine(
                client=client, journal=Journal(runner, events), target=job.target, config=job.engine
            )
            return CopyOutcome(diff, await engine.run())
    finally:
        events.close()

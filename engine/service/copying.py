"""Running a copy (``engine/service/copy_job.py``): list the source, plan it into the ledger, run the transfer
engine into the target — or, for a dry run, say what would be created and write nothing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.gc.targets import target_for
from gcbulk.engine.jobfile import load_token
from gcbulk.engine.ledger_location import default_events
from gcbulk.engine.plan.cases import PlannedCase
from gcbulk.engine.service.copy_bytes import stage_images
from gcbulk.engine.service.copy_job import CopyJob, copy_cases
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import EventLog
from gcbulk.engine.upload.reconcile import list_study
from gcbulk.engine.upload.transfer import RunOutcome, TransferEngine
from gcbulk.safe_files import make_private_dirs
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
    """The target's server (and the source's, unless the job names another: ``source_client``)."""
    return GrandChallengeClient(base_url=job.base_url, token=token, ca_file=job.ca_file, retry_policy=job.engine.retry)


def source_client(job: CopyJob, token: str) -> GrandChallengeClient:
    """The source's server of a copy across servers, with its own token."""
    assert job.from_base_url is not None
    return GrandChallengeClient(
        base_url=job.from_base_url, token=token, ca_file=job.from_ca_file, retry_policy=job.engine.retry
    )


async def _planned(client: GrandChallengeClient, job: CopyJob) -> list[PlannedCase]:
    """The copy's cases; ``client`` is the source's server."""
    source = target_for(client, job.source)
    await source.lookup()  # a wrong slug or no access is said here, naming the source
    log.info("listing %s", job.source.label)
    return copy_cases(job, [container async for container in source.iterate_containers()])


async def preview_copy(
    client: GrandChallengeClient, job: CopyJob, *, source: GrandChallengeClient | None = None
) -> CopyPreview:
    """What a copy would create; only GETs are sent. ``source``: the source's server when it is another."""
    cases = await _planned(source or client, job)
    target = target_for(client, job.target)
    await target.lookup()
    return CopyPreview(cases, frozenset(listed.title for listed in await list_study(target) if listed.title))


def _record_plan(ledger: Ledger, job: CopyJob, cases: list[PlannedCase]) -> PlanDiff:
    with planning(ledger, rules=job.record(), job_file=job.job_file) as plan:
        for case in cases:
            plan.add(case)
        diff: PlanDiff = plan.finish()
    return diff


async def run_copy(
    client: GrandChallengeClient,
    job: CopyJob,
    *,
    source: GrandChallengeClient | None = None,
    ledger_path: Path | None = None,
    events_path: Path | None = None,
) -> CopyOutcome:
    """Plans the copy into its ledger (beside the job file unless given) and runs it; a copy killed at any moment
    resumes from that ledger, with no second container per case. ``source``: the source's server when it is another
    than ``client``'s: its images are then downloaded to the job's staging folder and uploaded."""
    cases = await _planned(source or client, job)
    if job.moves_bytes:
        if source is None:
            raise ConfigurationError(f"{job.source.label} is on {job.from_base_url}: a client for it is needed")
        make_private_dirs(job.staging)
        cases = await stage_images(source, cases, job.staging, source_label=job.source.label)
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


FROM_TOKEN_ENV = "GCBULK_FROM_AUTHORIZATION"


def source_token(job: CopyJob, token_file: Path | str | None, environ: Mapping[str, str]) -> str | None:
    """The source server's token for a copy across servers (``--from-token-file`` or $GCBULK_FROM_AUTHORIZATION);
    None when the source is the target's server. Raises ConfigurationError naming both when neither is given."""
    if not job.moves_bytes:
        return None
    if token_file is not None:
        return load_token(token_file)
    if environ.get(FROM_TOKEN_ENV, "").strip():
        return environ[FROM_TOKEN_ENV].strip()
    raise ConfigurationError(
        f"{job.source.label} is on {job.from_base_url}, another server than the target's: give its API token in "
        f"{FROM_TOKEN_ENV} or a file named by --from-token-file"
    )


async def copy_or_preview(
    job: CopyJob, token: str, *, from_token: str | None, dry_run: bool
) -> CopyOutcome | CopyPreview:
    """Opens the target's client (and the source's, across servers) and previews or runs the copy."""
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(copy_client(job, token))
        source = None
        if job.moves_bytes:
            assert from_token is not None, "source_token() gives it for a copy across servers"
            source = await stack.enter_async_context(source_client(job, from_token))
        if dry_run:
            return await preview_copy(client, job, source=source)
        return await run_copy(client, job, source=source)
    raise AssertionError("unreachable")  # AsyncExitStack may swallow exceptions as far as mypy knows

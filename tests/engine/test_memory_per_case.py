"""A long run keeps nothing per case it has finished (issue 31: a million-case migration in one container): once the
cases are done, no case's upload objects are alive, the engine's per-case collections are empty and the ledger's
memo of which case a file or upload belongs to stays within its bound; in follow mode, a process waiting for new
cases holds no listing of the study's display sets. Structure, not RSS: what the memory benchmark
(``benchmarks/memory_growth.py``) measures follows from it."""

from __future__ import annotations

import gc
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.service.job_service import JobService
from gcbulk.engine.upload.case_files import CaseFiles
from gcbulk.engine.upload.case_upload import CaseUpload
from gcbulk.engine.upload.file_upload import FileUpload
from gcbulk.engine.upload.import_wait import ImportWait
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import EventLog
from gcbulk.engine.upload.transfer import TransferEngine
from gcbulk.state import ledger_core
from gcbulk.state.ledger import default_ledger_path
from gcbulk.state.server_truth import ListedDisplaySet
from tests.container.conftest import follow_settings, following
from tests.engine.conftest import FAST_ENGINE, load_and_plan, make_tutorial_tree, write_job

CASES = 8  # two files each: 16 files and 16 uploads, four times the memo's bound below
MEMO_BOUND = 4
PER_CASE_TYPES = (CaseUpload, CaseFiles, FileUpload, ImportWait)


async def test_after_every_case_is_done_the_run_holds_nothing_per_case(
    tmp_path: Path, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_core, "CASE_MEMO_ENTRIES", MEMO_BOUND)
    make_tutorial_tree(tmp_path / "cases", CASES)
    job = load_and_plan(write_job(tmp_path, emulator))
    events = EventLog(tmp_path / "events.jsonl")
    try:
        with anyio.fail_after(120):
            async with LedgerRunner(default_ledger_path(job.job_file), job.binding) as runner:
                async with GrandChallengeClient(
                    base_url=emulator.base_url,
                    token=emulator.tokens["editor"],
                    ca_file=emulator.ca_file,
                    retry_policy=FAST_ENGINE.retry,
                ) as client:
                    engine = TransferEngine(
                        client=client,
                        journal=Journal(runner, events),
                        target=job.target,
                        config=FAST_ENGINE,
                    )
                    outcome = await engine.run()
                    assert (outcome.done, outcome.failed) == (CASES, [])

                    # The engine, its client and its ledger are still open, as in follow mode between passes.
                    gc.collect()
                    alive = [type(o).__name__ for o in gc.get_objects() if isinstance(o, PER_CASE_TYPES)]
                    assert alive == []
                    assert engine.leases.running == {} and engine.leases.lost == set()
                    ledger = runner.ledger
                    assert 0 < len(ledger._case_of_file) <= MEMO_BOUND
                    assert len(ledger._case_of_upload) <= MEMO_BOUND
                    # What the memo forgot is asked of the ledger again: every upload's event still names its case.
                    cases_of_upload_events = {
                        e["case_id"] for e in await runner.run(ledger.events) if e["subject"] == "upload"
                    }
                    assert None not in cases_of_upload_events and len(cases_of_upload_events) == CASES
    finally:
        events.close()


@pytest.mark.emulator(import_delay_seconds=0.0)
async def test_follow_mode_waiting_for_new_cases_holds_no_listing_of_the_study(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    """Each follow round lists the study (every display set in it). Once the round is over, nothing of that listing
    is alive: not after a round that found nothing to do (it was kept until the next pass), and not after a pass
    (the run's status keeps the last pass's engine reachable, which kept its listing). Either way a process waiting
    for new cases held one object per display set of the study."""
    root = tmp_path / "cases"
    root.mkdir()
    job = write_job(tmp_path, emulator)
    service = JobService(follow_settings(job, emulator, GCBULK_PROGRESS_INTERVAL="3600"))
    fed = 0

    async def all_fed_cases_done(running: JobService) -> None:
        assert running.runner is not None
        while (await running.runner.run(running.runner.ledger.counts_by_state))["case"] != {"done": fed}:
            await anyio.sleep(0.02)

    async def a_whole_round_after(running: JobService) -> None:
        """Returns once a round has planned (and found nothing new) and the follower waits again."""
        while running.state.phase != "planning":
            await anyio.sleep(0.002)
        while running.state.phase != "idle":
            await anyio.sleep(0.002)

    async def scenario(running: JobService) -> None:
        nonlocal fed
        async with following(running):
            with anyio.fail_after(120):
                for batch in range(3):  # cases arrive in three batches, each uploaded by a pass of its own
                    make_tutorial_tree(tmp_path / f"batch{batch}", fed + 2)
                    for n in (fed + 1, fed + 2):
                        (tmp_path / f"batch{batch}" / f"patient{n}").rename(root / f"patient{n}")
                    fed += 2
                    await all_fed_cases_done(running)
                await a_whole_round_after(running)
                gc.collect()
                alive = [
                    type(o).__name__ for o in gc.get_objects() if isinstance(o, (*PER_CASE_TYPES, ListedDisplaySet))
                ]
                assert alive == []
                assert len(emulator.context.store.display_sets) == fed  # the study it listed had them all
            running.request_stop("test")

    await service.serve(scenario)

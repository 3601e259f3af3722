"""A long run keeps nothing per case it has finished (issue 31: a million-case migration in one container): once the
cases are done, no case's upload objects are alive, the engine's per-case collections are empty and the ledger's
memo of which case a file or upload belongs to stays within its bound. Structure, not RSS: what the memory
benchmark (``benchmarks/memory_growth.py``) measures follows from it."""

from __future__ import annotations

import gc
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.upload.case_files import CaseFiles
from gcbulk.engine.upload.case_upload import CaseUpload
from gcbulk.engine.upload.file_upload import FileUpload
from gcbulk.engine.upload.import_wait import ImportWait
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import EventLog
from gcbulk.engine.upload.transfer import TransferEngine
from gcbulk.state import ledger_core
from gcbulk.state.ledger import default_ledger_path
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

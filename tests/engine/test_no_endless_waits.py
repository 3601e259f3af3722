"""No wait without a deadline or a voice: every former hang of the scheduler ends, within a bound, with the case done
or failed with a reason that names the limit it waited for."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import Interrupted
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import EventLog
from gcbulk.engine.upload.server_limits import CountingGate, GateWaitTimeout
from gcbulk.engine.upload.transfer import RunOutcome, TransferEngine
from gcbulk.state.ledger import default_ledger_path
from tests.engine.conftest import FAST_ENGINE, load_and_plan, make_tutorial_tree, run_job, write_job
from tests.engine.test_faults import assert_all_imported

BOUND = 60  # seconds: a test that would have hung fails here instead


# ---- the gate itself ------------------------------------------------------------------------------------------------


async def test_a_release_from_a_cleanup_path_wakes_the_waiting_case() -> None:
    gate = CountingGate(1, held=1, name="live uploads")
    taken: list[int] = []

    async def waiter() -> None:
        taken.append(await gate.acquire(1))

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            while gate.waiting == 0:
                await anyio.lowlevel.checkpoint()
            gate.release_nowait(1)  # synchronous, as a cancelled task's cleanup does it
    assert taken == [1] and gate.held == 1


async def test_a_request_above_the_ceiling_is_admitted_alone() -> None:
    gate = CountingGate(2, name="imports")
    with anyio.fail_after(BOUND):
        assert await gate.acquire(3) == 3
    assert gate.held == 3
    gate.release_nowait(3)
    assert gate.held == 0


async def test_a_long_wait_says_what_it_waits_for_and_rereads_the_servers_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts = iter([9, 4])  # the first re-read still shows the account full, the second shows room

    async def server_count() -> int:
        return next(counts)

    gate = CountingGate(
        10, held=10, name="live uploads", why="the server's cap", recount=server_count, voice_seconds=0.01
    )
    with caplog.at_level(logging.INFO, logger="gcbulk.waits"), anyio.fail_after(BOUND):
        await gate.acquire(2, who="patient1")
    assert gate.held == 6
    said = [r.getMessage() for r in caplog.records if r.name == "gcbulk.waits"]
    assert any("patient1 waits" in line and "live uploads" in line and "the server's cap" in line for line in said)
    assert any("the server counts 9" in line for line in said)


async def test_a_wait_that_cannot_succeed_ends_with_a_reason_naming_the_limit() -> None:
    gate = CountingGate(1, held=1, name="live uploads", wait_timeout=0.05)
    with (
        anyio.fail_after(BOUND),
        pytest.raises(GateWaitTimeout, match="patient1: no room for 1 under the live uploads limit of 1"),
    ):
        await gate.acquire(1, who="patient1")
    assert gate.waiting == 0


async def test_a_stop_wakes_every_waiter_and_takes_no_slot() -> None:
    gate = CountingGate(1, held=1, name="imports")
    stopped: list[BaseException] = []

    async def waiter() -> None:
        try:
            await gate.acquire(1)
        except Interrupted as stop:
            stopped.append(stop)

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            group.start_soon(waiter)
            while gate.waiting < 2:
                await anyio.lowlevel.checkpoint()
            gate.stop()
    assert len(stopped) == 2 and gate.held == 1
    gate.release_nowait(1)
    with pytest.raises(Interrupted):  # even with room: a stopping run starts nothing new
        await gate.acquire(1)


# ---- whole runs against the emulator ----------------------------------------------------------------------------


async def test_cases_with_more_files_than_the_live_upload_ceiling_finish(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    # Each case has two files; with a ceiling of 1 its first file used to hold the only slot until the import,
    # which waited for the second file: the run hung.
    make_tutorial_tree(tmp_path / "cases", 3)
    with anyio.fail_after(BOUND):
        outcome = await run_job(
            write_job(tmp_path, emulator), emulator, dataclasses.replace(FAST_ENGINE, live_upload_ceiling=1)
        )
    assert outcome.failed == [] and outcome.done == 3
    await assert_all_imported(client)


async def test_one_import_in_flight_still_imports_a_case_with_two_images(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    with anyio.fail_after(BOUND):
        outcome = await run_job(
            write_job(tmp_path, emulator), emulator, dataclasses.replace(FAST_ENGINE, imports_in_flight=1)
        )
    assert outcome.failed == [] and outcome.done == 3
    await assert_all_imported(client)


async def _fill_the_account(client: GrandChallengeClient, uploads: int) -> None:
    """Uploads of another tool on the same account: they count against the cap (docs/gc-api.md §1)."""
    for n in range(uploads):
        await client.create_upload(f"other-tool-{n}.bin")


async def test_a_full_account_fails_each_case_with_the_limit_it_waited_for(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    await _fill_the_account(client, 2)
    make_tutorial_tree(tmp_path / "cases", 2)
    config = dataclasses.replace(FAST_ENGINE, live_upload_ceiling=2, limit_wait_timeout_seconds=0.3)
    with anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator, config)
    assert outcome.done == 0 and len(outcome.failed) == 2
    assert all("no room for 2 under the live uploads limit of 2" in reason for _, reason in outcome.failed)
    assert await client.count_uploads() == 2  # nothing was created past the ceiling


async def test_a_stop_while_cases_wait_for_a_slot_ends_the_run_at_once_and_creates_nothing(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    await _fill_the_account(client, 2)
    make_tutorial_tree(tmp_path / "cases", 3)
    job = load_and_plan(write_job(tmp_path, emulator))
    events = EventLog(tmp_path / "events.jsonl")
    outcome: list[RunOutcome] = []
    async with LedgerRunner(default_ledger_path(job.job_file), job.binding) as runner:
        engine = TransferEngine(
            client=client,
            journal=Journal(runner, events),
            target=job.target,
            config=dataclasses.replace(FAST_ENGINE, live_upload_ceiling=2),
        )

        async def run() -> None:
            outcome.append(await engine.run())

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as group:
                group.start_soon(run)
                while engine.context is None or engine.context.upload_gate.waiting == 0:
                    await anyio.sleep(0.01)
                engine.stop()
    events.close()
    assert outcome[0].interrupted and outcome[0].failed == [] and outcome[0].done == 0
    assert await client.count_uploads() == 2  # a stopping run created no upload

"""No wait without a voice: while the server imports a case's values, the log says at least every ``VOICE_SECONDS``
which case waits for the import of which values into which display set, and for how long so far — also in the
middle of a single long pause between two polls (with imports taking minutes, a pause does too)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.upload import import_wait
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import EventLog
from gcbulk.engine.upload.transfer import RunOutcome, TransferEngine
from gcbulk.state.ledger import default_ledger_path
from tests.engine.conftest import FAST_ENGINE, load_and_plan, make_tutorial_tree, run_job, write_job
from tests.engine.test_faults import assert_all_imported

BOUND = 60  # seconds: a wait that would not end fails here instead

# The first poll comes this long after the values are sent: far longer than the slow import below, so the whole
# wait is this one pause and a single poll that finds every value in place.
LONG_PAUSE = dataclasses.replace(FAST_ENGINE, poll_initial_seconds=3.0, poll_max_seconds=3.0)
# For the test that counts the polls: 3 s was not always enough with the whole suite on two cores (a second poll,
# now and then).
LONGER_PAUSE = dataclasses.replace(FAST_ENGINE, poll_initial_seconds=6.0, poll_max_seconds=6.0)


# A server whose imports are slow next to the voice interval below.
pytestmark = pytest.mark.emulator(import_delay_seconds=0.3)


@pytest.fixture(autouse=True)
def frequent_voice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_wait, "VOICE_SECONDS", 0.05)


def voices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gcbulk.waits"]


def display_set_polls(emulator: RunningEmulator) -> int:
    return sum(
        count
        for route, count in emulator.context.counters.requests.items()
        if route.startswith("GET api:/api/v1/reader-studies/display-sets/{")
    )


async def only_display_set_pk(client: GrandChallengeClient) -> str:
    study = await client.reader_study_by_slug("example-study")
    pks = [str(ds["pk"]) async for ds in client.iterate_display_sets(study["pk"])]
    assert len(pks) == 1
    return pks[0]


async def test_one_long_pause_before_the_first_poll_says_which_case_waits_for_the_import_of_what(
    tmp_path: Path,
    emulator: RunningEmulator,
    client: GrandChallengeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    config = dataclasses.replace(LONGER_PAUSE, stagger_image_values=False)  # both images sent in one PATCH
    with caplog.at_level(logging.INFO, logger="gcbulk.waits"), anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator, config)
    assert outcome.failed == [] and outcome.done == 1
    assert display_set_polls(emulator) == 1  # the wait was one pause; before, it said nothing for all of it
    display_set = await only_display_set_pk(client)
    heard = [line for line in voices(caplog) if line.startswith("patient1 waits")]
    assert heard, voices(caplog)
    assert all(
        f"s so far for the server's import of ct-image, airway-segmentation into display set {display_set}" in line
        for line in heard
    )


async def test_the_pause_between_two_staggered_images_says_which_import_holds_the_next_image_back(
    tmp_path: Path,
    emulator: RunningEmulator,
    client: GrandChallengeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    config = dataclasses.replace(LONG_PAUSE, stagger_image_values=True)
    with caplog.at_level(logging.INFO, logger="gcbulk.waits"), anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator, config)
    assert outcome.failed == [] and outcome.done == 1
    display_set = await only_display_set_pk(client)
    assert any(
        line.startswith("patient1 waits")
        and f"for the server's import of ct-image into display set {display_set} before sending its next image" in line
        for line in voices(caplog)
    ), voices(caplog)


async def test_a_stop_in_the_middle_of_a_long_import_pause_ends_the_run_and_the_resume_finishes_the_case(
    tmp_path: Path,
    emulator: RunningEmulator,
    client: GrandChallengeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job_file = write_job(tmp_path, emulator)
    job = load_and_plan(job_file)
    events = EventLog(tmp_path / "events.jsonl")
    outcome: list[RunOutcome] = []
    # A pause far past the bound: only the stop can end it in time.
    endless_pause = dataclasses.replace(FAST_ENGINE, stagger_image_values=False, poll_initial_seconds=10 * BOUND)
    async with LedgerRunner(default_ledger_path(job.job_file), job.binding) as runner:
        engine = TransferEngine(client=client, journal=Journal(runner, events), target=job.target, config=endless_pause)

        async def run() -> None:
            outcome.append(await engine.run())

        with caplog.at_level(logging.INFO, logger="gcbulk.waits"), anyio.fail_after(BOUND):
            async with anyio.create_task_group() as group:
                group.start_soon(run)
                while not any(line.startswith("patient1 waits") for line in voices(caplog)):
                    await anyio.sleep(0.01)
                engine.stop()
    events.close()
    assert outcome[0].interrupted and outcome[0].failed == [] and outcome[0].done == 0
    with anyio.fail_after(BOUND):
        resumed = await run_job(job_file, emulator, replan=False)
    assert resumed.failed == [] and resumed.done == 1
    await assert_all_imported(client, ["patient1"])

"""A refused create is never a create whose answer was lost (issue 25). The server's own answer — a 400 for a taken
title, its HTML 500 when a concurrent create of the same title lost on the database constraint — means "not
created": the display set holding the title is someone else's and is named, never filled. Only a lost answer (a
dropped connection, a gateway's 502) is settled by looking, and the display set found then is taken as this
create's only when nothing on the server contradicts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.context import EmulatorConfig
from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.display_set_create import TitleTaken
from gcbulk.engine.upload.crashpoints import ENV_VAR
from tests.engine.conftest import FAST_RETRIES, make_tutorial_tree, write_job
from tests.engine.test_faults import faults

BOUND = 60
CREATE = "POST /api/v1/reader-studies/display-sets/"


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    # The server's round trip between its title check and its insert (docs/gc-api.md §10): creates that meet in it
    # both pass the check, and the later insert fails with the HTML 500.
    return EmulatorConfig(data_dir=tmp_path / "emulator", import_delay_seconds=0.05, create_round_trip_seconds=0.2)


async def _editor_client(emulator: RunningEmulator) -> GrandChallengeClient:
    return GrandChallengeClient(
        base_url=emulator.base_url, token=emulator.tokens["editor"], ca_file=emulator.ca_file, retry_policy=FAST_RETRIES
    )


async def test_the_loser_of_two_concurrent_creates_of_one_title_is_told_which_display_set_won(
    emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    other = await _editor_client(emulator)
    outcomes: list[dict | TitleTaken] = []

    async def create(gc: GrandChallengeClient) -> None:
        try:
            outcomes.append(await gc.create_display_set("example-study", "patient1", order=10))
        except TitleTaken as taken:
            outcomes.append(taken)

    async with other:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as group:
                group.start_soon(create, client)
                group.start_soon(create, other)
    (winner,) = [o for o in outcomes if isinstance(o, dict)]
    (loser,) = [o for o in outcomes if isinstance(o, TitleTaken)]
    assert loser.pk == winner["pk"] and "the server refused this create (500)" in str(loser)
    assert [ds.pk for ds in emulator.context.store.display_sets.values()] == [winner["pk"]]
    assert emulator.context.counters.requests[f"{CREATE.split()[0]} api:{CREATE.split()[1]}"] == 2  # never resent


async def test_a_500_that_created_nothing_is_sent_again(
    emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    faults(emulator, FaultRule(match=CREATE, status=500, times=2))  # the handler never ran
    with anyio.fail_after(BOUND):
        created = await client.create_display_set("example-study", "patient1", order=10)
    assert [ds.pk for ds in emulator.context.store.display_sets.values()] == [created["pk"]]


async def test_a_lost_answer_is_not_taken_for_a_display_set_that_holds_values(
    emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    someone_elses = await client.create_display_set("example-study", "patient1", order=10)
    await client.update_display_set(someone_elses["pk"], values=[{"interface": "patient-age", "value": 61}])
    # This create's connection drops after the request is read (its fate unknown): the look finds the title, and a
    # display set that already holds a value is not what an empty create makes.
    faults(emulator, FaultRule(match=CREATE, reset="response", reset_at_fraction=0.0, times=1))
    with anyio.fail_after(BOUND), pytest.raises(TitleTaken, match="answer was lost and it already holds 1 value"):
        await client.create_display_set("example-study", "patient1", order=10)


async def test_a_lost_answer_is_not_taken_for_a_display_set_with_another_order(
    emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    await client.create_display_set("example-study", "patient1", order=70)
    faults(emulator, FaultRule(match=CREATE, status=502, times=1))
    with anyio.fail_after(BOUND), pytest.raises(TitleTaken, match="its order is 70, and the create sent 10"):
        await client.create_display_set("example-study", "patient1", order=10)


def test_a_run_killed_after_its_intent_does_not_fill_the_display_set_another_job_made_meanwhile(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job_file = write_job(tmp_path, threaded_emulator)
    env = {**os.environ, "GRAND_CHALLENGE_AUTHORIZATION": threaded_emulator.tokens["editor"]}

    def gcbulk(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gcbulk", *args],
            env={**env, ENV_VAR: crash_at} if crash_at else {k: v for k, v in env.items() if k != ENV_VAR},
            capture_output=True,
            text=True,
            timeout=120,
        )

    # Killed after recording the intent to create patient1's display set, before the POST went out.
    assert gcbulk("run", str(job_file), crash_at="after-display-set-intent").returncode == -9
    # Meanwhile another job made and filled a display set with that title.
    other = tmp_path / "other"
    make_tutorial_tree(other / "cases", 1)
    assert gcbulk("run", str(write_job(other, threaded_emulator))).returncode == 0
    store = threaded_emulator.context.store
    (theirs,) = [ds for ds in store.display_sets.values() if ds.title == "patient1"]
    filled = dict(theirs.values)

    resumed = gcbulk("run", str(job_file))
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    status = gcbulk("status", str(job_file), "--offline")
    assert f"'patient1' (pk {theirs.pk}) was made by another job or person" in status.stdout
    assert "it already holds 2 value(s)" in status.stdout
    assert theirs.values == filled  # untouched
    assert [ds.title for ds in store.display_sets.values()] == ["patient1"]

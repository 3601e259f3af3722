"""Only our own display sets: a title in the study that this job did not create is not filled without the user's
opt-in; with it, values already there are kept and a display set with answers is never touched. A token that may
not add display sets is found before any byte is sent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.admin_answers import seed_answers
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import ConfigurationError
from tests.engine.conftest import (
    FAST_ENGINE,
    assert_tutorial_values,
    make_tutorial_tree,
    run_job,
    study_display_sets,
    write_job,
)

BOUND = 60


async def _someone_elses(client: GrandChallengeClient, title: str) -> dict:
    """A display set made by another tool or job (same account, no record in this job's ledger)."""
    return await client.create_display_set("example-study", title)


async def test_a_title_made_by_someone_else_is_not_filled_without_the_opt_in(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    foreign = await _someone_elses(client, "patient2")
    make_tutorial_tree(tmp_path / "cases", 3)
    with anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator)
    assert outcome.done == 2 and [title for title, _ in outcome.failed] == ["patient2"]
    assert "did not create" in outcome.failed[0][1] and "--adopt-existing" in outcome.failed[0][1]
    assert (await study_display_sets(client))["patient2"]["values"] == []  # untouched
    assert (await client.get_display_set(foreign["pk"]))["values"] == []


async def test_with_the_opt_in_missing_values_are_added_and_a_display_set_with_answers_is_never_touched(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    await _someone_elses(client, "patient1")
    answered = await _someone_elses(client, "patient2")
    await seed_answers(emulator.context, "example-study", creators=["reader1"], display_set_pks=[answered["pk"]])
    make_tutorial_tree(tmp_path / "cases", 3)
    with anyio.fail_after(BOUND):
        outcome = await run_job(
            write_job(tmp_path, emulator), emulator, dataclasses.replace(FAST_ENGINE, adopt_existing=True)
        )
    assert outcome.done == 2 and [title for title, _ in outcome.failed] == ["patient2"]
    assert "already has answers" in outcome.failed[0][1]
    display_sets = await study_display_sets(client)
    assert display_sets["patient2"]["values"] == []
    await assert_tutorial_values(client, ["patient1"])
    assert len(display_sets) == 3  # adopted, not duplicated


async def test_a_readers_token_is_refused_before_any_file_is_uploaded(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    with anyio.fail_after(BOUND), pytest.raises(ConfigurationError, match="must be an editor"):
        await run_job(write_job(tmp_path, emulator), emulator, user="reader1")
    requests = emulator.context.counters.requests
    assert requests.get("POST api:/api/v1/uploads/", 0) == 0
    assert not emulator.context.store.display_sets  # the permission check created nothing


def test_gcbulk_plan_with_a_readers_token_says_the_user_must_be_an_editor(
    tmp_path: Path,
    threaded_emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gcbulk.engine.cli import main

    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", threaded_emulator.tokens["reader1"])
    make_tutorial_tree(tmp_path / "cases", 1)
    assert main(["plan", str(write_job(tmp_path, threaded_emulator))]) == 2
    assert "must be an editor of the study" in capsys.readouterr().err
    assert not threaded_emulator.context.store.display_sets

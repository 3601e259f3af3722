"""Every public API call inside a running event loop, as Jupyter runs a cell: no "asyncio.run() cannot be called
from a running event loop", and the notebook's own loop keeps running while gcbulk works."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

import gcbulk
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.api import answers_cache
from tests.api.test_python_api import TOKEN_ENV
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.results.conftest import STUDY, World

CELL_SECONDS = 120


async def _ticks_while(call, *args, **kwargs):
    """``call(*args)`` inside this loop, with a heartbeat task beside it: returns (result, heartbeats)."""
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            beats += 1
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(heartbeat())
    try:
        # A blocking call made from a cell blocks the cell's loop; the heartbeat shows the loop itself was not nested
        # or broken: it ticks again right after.
        result = call(*args, **kwargs)
        await asyncio.sleep(0.05)
    finally:
        beat.cancel()
    return result, beats


def test_plan_run_verify_and_status_work_inside_a_running_loop(
    tmp_path: Path, threaded_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    monkeypatch.setenv(TOKEN_ENV, threaded_emulator.tokens["editor"])
    job_file = write_job(tmp_path, threaded_emulator)

    async def cell() -> None:
        with anyio.fail_after(CELL_SECONDS):
            job = gcbulk.Job(job_file)
            preview, _ = await _ticks_while(job.plan, dry_run=True)  # the README's first notebook line
            assert preview.diff.cases == 2 and not preview.blocking
            planned, _ = await _ticks_while(job.plan)
            assert planned.diff.cases == 2
            outcome, beats = await _ticks_while(job.run)
            assert outcome.failed == [] and beats >= 1
            verified, _ = await _ticks_while(job.verify)
            assert verified.consistent
            status, _ = await _ticks_while(job.status)
            assert status["counts"]["case"] == {"done": 2}

    asyncio.run(cell())
    titles = sorted(ds.title for ds in threaded_emulator.context.store.display_sets.values())
    assert titles == ["patient1", "patient2"]


def test_a_studys_answers_export_and_reorder_work_inside_a_running_loop(
    tmp_path: Path, threaded_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(threaded_emulator, tmp_path)
    world.add_display_sets(["case2", "case10", "case1"])
    monkeypatch.setenv(TOKEN_ENV, threaded_emulator.tokens["editor"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))

    async def cell() -> None:
        with anyio.fail_after(CELL_SECONDS):
            study = gcbulk.ReaderStudy(STUDY, base_url=threaded_emulator.base_url, ca_file=threaded_emulator.ca_file)
            # Reorder before readers start: Grand Challenge refuses to change an answered display set's order.
            summary, _ = await _ticks_while(study.reorder, by="natural-title", ledger=tmp_path / "reorder.sqlite")
            assert not summary.failed
            await world.answer_all(["reader1"])  # the notebook's own loop, still usable
            rows, _ = await _ticks_while(study.answers_per_case)
            assert sorted(row["case"] for row in rows) == ["case1", "case10", "case2"]
            answers, _ = await _ticks_while(study.answers)
            assert {row["creator"] for row in answers} == {"reader1"}
            exported, _ = await _ticks_while(study.export, tmp_path / "export", masks=False)
            assert (tmp_path / "export" / "answers.csv").exists()
            assert study.cache.is_relative_to(tmp_path / "user-cache")

    asyncio.run(cell())
    by_order = sorted(world.display_sets, key=lambda ds: ds.order)
    assert [ds.title for ds in by_order] == ["case1", "case2", "case10"]


def test_the_answers_cache_is_the_users_own_and_one_per_server_and_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    here = answers_cache("https://grand-challenge.org/api/v1/", "my-study")
    assert here.is_relative_to(tmp_path / "user-cache" / "gcbulk")
    assert (here.parents[1].stat().st_mode & 0o777) == 0o700  # answers can name patients: this user's only
    assert answers_cache("https://127.0.0.1:8443/api/v1/", "my-study") != here  # same slug, another server
    assert answers_cache("https://grand-challenge.org/api/v1/", "other-study") != here
    study = gcbulk.ReaderStudy("my-study", base_url="https://grand-challenge.org/api/v1/", token="t")
    assert study.cache == here


def test_the_apis_errors_carry_the_exit_code_the_command_would_give(
    tmp_path: Path, threaded_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job_file = write_job(tmp_path, threaded_emulator)
    job_file.write_text(job_file.read_text().replace('"example-study"', '"exmaple-study"'))
    monkeypatch.setenv(TOKEN_ENV, threaded_emulator.tokens["editor"])

    async def cell() -> None:
        with anyio.fail_after(CELL_SECONDS), pytest.raises(gcbulk.ConfigurationError) as misspelt:
            gcbulk.Job(job_file).run()
        assert misspelt.value.exit_code == 2 and "check the slug" in str(misspelt.value)

    asyncio.run(cell())

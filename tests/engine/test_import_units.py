"""How many of the server's imports a case holds (benchmarks/README.md, "The import gate counts imports on the
server"): a case that hands its images over one at a time has about one import on the server at any moment, so it
holds one unit of ``imports_in_flight``, and the next case hands its first image over while this one waits for its
second. Holding one unit per image kept the server's import workers idle while cases waited for units their images
did not use yet (R1: 100 s against a floor of 67 s)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.pacer import import_policy
from gcbulk.engine.upload.server_limits import CountingGate, ImportPacer
from tests.engine.conftest import FAST_ENGINE, assert_tutorial_values, make_tutorial_tree, run_job, write_job

BOUND = 120  # seconds: a run that would not end fails here instead

# Imports slow next to the polls' first step, as on the server (docs/gc-api.md §10: about a second per image).
pytestmark = pytest.mark.emulator(import_delay_seconds=0.3)


async def test_with_two_imports_in_flight_two_staggered_cases_have_images_on_the_server_at_once(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    config = dataclasses.replace(
        FAST_ENGINE, stagger_image_values=True, imports_in_flight=2, poll_initial_seconds=0.25, poll_max_seconds=10.0
    )
    job_file = write_job(tmp_path, emulator)
    with anyio.fail_after(BOUND):
        outcome = await run_job(job_file, emulator, config)
    assert outcome.done == 2 and outcome.failed == []
    await assert_tutorial_values(client)
    events = [json.loads(line) for line in job_file.with_name("events.jsonl").read_text().splitlines()]
    first_import_seen = next(n for n, e in enumerate(events) if e["event"] == "item_done")
    handed_over = {e["case"] for e in events[:first_import_seen] if e["event"] == "item_session_recorded"}
    # Both cases' first images went to the server before any import was seen: each case held one unit, not two.
    assert handed_over == {"patient1", "patient2"}, events


def test_the_fastest_recent_import_outlasts_a_stretch_of_queued_imports_and_is_forgotten_after_two_windows() -> None:
    pacer = ImportPacer(CountingGate(16), import_policy(16))
    assert pacer.fastest_recent_seconds() is None
    pacer.imported(0.9)
    for _ in range(ImportPacer.FASTEST_WINDOW):  # a queue on the server: every import takes four times as long
        pacer.imported(4.0)
    # The typical time includes the queue (it times the polls); the next image of a case goes after the fastest.
    assert pacer.fastest_recent_seconds() == 0.9 and (pacer.expected_seconds() or 0.0) > 3.5
    for _ in range(ImportPacer.FASTEST_WINDOW):
        pacer.imported(4.0)
    assert pacer.fastest_recent_seconds() == 4.0  # the server's speed drifts over days: an old floor goes

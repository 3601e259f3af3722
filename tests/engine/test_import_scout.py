"""Before a run has seen an import, one case (the scout) polls for its first image and the others wait for its
measurement instead of each polling the server. A scout whose wait stalls — a slow import, a poll the server holds —
holds the others only ``SCOUT_PATIENCE_SECONDS``: then they poll for their own imports and finish."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.upload import import_wait
from tests.engine.conftest import FAST_ENGINE, make_tutorial_tree, run_job, write_job

# The scout's first look at its display set is held this long by the server; the other cases must be done well
# within it.
HELD_SECONDS = 15.0
OTHERS_DONE_WITHIN = 12.0


def complete_display_sets(emulator: RunningEmulator) -> int:
    return sum(
        1
        for display_set in list(emulator.context.store.display_sets.values())
        if set(display_set.values) == {"ct-image", "airway-segmentation"}
    )


async def test_a_scout_whose_wait_stalls_does_not_hold_the_other_cases(
    tmp_path: Path, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(import_wait, "SCOUT_PATIENCE_SECONDS", 1.0)
    make_tutorial_tree(tmp_path / "cases", 4)
    job = write_job(tmp_path, emulator)
    # The first GET of a display set is the scout's poll for its first image (the others wait for its measurement).
    emulator.context.faults.replace(
        [FaultRule(match="GET /api/v1/reader-studies/display-sets/*/", latency_seconds=HELD_SECONDS, times=1)]
    )
    outcome = None

    async def run() -> None:
        nonlocal outcome
        # A fixed number of API calls in flight: the held poll keeps one of them, the others' requests go by.
        outcome = await run_job(job, emulator, FAST_ENGINE.replace(adaptive_concurrency=False))

    with anyio.fail_after(HELD_SECONDS + 60):
        async with anyio.create_task_group() as group:
            group.start_soon(run)
            with anyio.fail_after(OTHERS_DONE_WITHIN):  # while the scout's poll is still held by the server
                while complete_display_sets(emulator) < 3:
                    await anyio.sleep(0.05)
    assert outcome is not None and outcome.done == 4 and not outcome.failed
    assert complete_display_sets(emulator) == 4

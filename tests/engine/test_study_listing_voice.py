"""A listing of a big study takes pages and minutes on the server (docs/gc-api.md §10): it says, while it runs, what
it lists and how far it got — into the ledger (``read_study``, every run) and into memory (``list_study``, a plan)."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.target_ref import READER_STUDY, TargetRef
from gcbulk.engine.gc.targets import target_for
from gcbulk.engine.upload.journal import LedgerRunner
from gcbulk.engine.upload.reconcile import list_study, read_study
from tests.state.conftest import BINDING

BOUND = 60


async def _three_display_sets(client: GrandChallengeClient) -> None:
    for n in (1, 2, 3):
        await client.create_display_set("example-study", f"someone else's {n}", order=10 * n)


async def test_a_listing_that_takes_long_says_what_it_lists_and_how_far_it_got(
    tmp_path: Path, client: GrandChallengeClient, caplog: pytest.LogCaptureFixture
) -> None:
    await _three_display_sets(client)
    target = target_for(client, TargetRef(READER_STUDY, "example-study"))
    caplog.set_level(logging.INFO, logger="gcbulk.waits")
    with anyio.fail_after(BOUND):
        async with LedgerRunner(tmp_path / "ledger.sqlite", BINDING) as runner:
            # Every display set "takes long" here: each one seen is a moment to speak.
            listing = await read_study(target, runner, voice_every=0.0)
        assert listing.listed == 3
        said = [r.getMessage() for r in caplog.records if r.name == "gcbulk.waits"]
        assert said[0].startswith("listing the display sets of reader study 'example-study': 1 so far (")
        assert said[-1].startswith("listing the display sets of reader study 'example-study': 3 so far (")
        caplog.clear()
        assert len(await list_study(target, voice_every=0.0)) == 3
        assert [r.getMessage().split(" (")[0] for r in caplog.records if r.name == "gcbulk.waits"] == [
            f"listing the display sets of reader study 'example-study': {n} so far" for n in (1, 2, 3)
        ]


async def test_a_quick_listing_says_nothing(
    tmp_path: Path, client: GrandChallengeClient, caplog: pytest.LogCaptureFixture
) -> None:
    await _three_display_sets(client)
    caplog.set_level(logging.INFO, logger="gcbulk.waits")
    with anyio.fail_after(BOUND):
        assert len(await list_study(target_for(client, TargetRef(READER_STUDY, "example-study")))) == 3
    assert not [r for r in caplog.records if r.name == "gcbulk.waits"]

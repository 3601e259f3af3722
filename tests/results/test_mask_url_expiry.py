"""Signed download URLs that are already expired whenever they are used: the export gives up after a few fresh ones
instead of asking forever, and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcbulk.emulator.admin_answers import create_answer
from gcbulk.engine.results.masks import MAX_RESOLVES
from tests.results.conftest import World, image_file_route

# Signed a minute in the past: a clock skew between the API and the object store, as far as a client can tell.
pytestmark = pytest.mark.emulator(download_url_expiry_seconds=-60)


async def test_urls_refused_right_after_signing_fail_the_mask_after_three_tries(world: World, tmp_path: Path):
    world.add_display_sets(["case-1"])
    await create_answer(
        world.context,
        creator="reader1",
        question_pk=world.question("Mask").pk,
        display_set_pk=world.display_sets[0].pk,
        mask_file=world.mask_file(),
    )

    summary = await world.export(tmp_path / "out")

    assert summary.masks.failed == 1 and summary.masks.resolved_again == MAX_RESOLVES - 1
    assert "answered 403" in summary.failures[0] and "Request has expired" in summary.failures[0]
    assert "X-Amz-Signature" not in summary.failures[0]  # signed URLs stay out of messages
    assert world.requests(image_file_route()) == MAX_RESOLVES

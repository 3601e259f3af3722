"""Retries that cannot double or misjudge: idempotent requests ride out 500s; a request that creates or consumes
something is sent again only after looking at the server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from gcbulk.emulator.sweep import sweep_expired_uploads
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import UploadNoLongerOpen
from gcbulk.engine.gc.target_ref import READER_STUDY, TargetRef
from gcbulk.engine.gc.targets import target_for
from gcbulk.engine.upload.s3_parts import put_part
from gcbulk.engine.upload.values_patch import IMAGE, PlannedValue, UploadsGoneBeforeAttach, send_values
from tests.engine.conftest import FAST_ENGINE, FAST_RETRIES, make_tutorial_tree, run_job, write_job
from tests.engine.test_faults import assert_all_imported, faults, one_display_set_per_title

BOUND = 120


async def test_500s_on_polls_parts_presigns_and_list_parts_are_retried_and_no_case_fails(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    faults(
        emulator,
        FaultRule(match="GET api", probability=0.3, status=500),
        FaultRule(match="PUT s3", probability=0.3, status=500),  # S3's "500 InternalError": retry it
        FaultRule(match="PATCH */generate-presigned-urls/", status=500, times=2),
    )
    policy = dataclasses.replace(FAST_RETRIES, attempts_per_item=40)
    with anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator, dataclasses.replace(FAST_ENGINE, retry=policy))
    faults(emulator)
    assert outcome.failed == [] and outcome.done == 3 and outcome.stats.retries > 0
    await assert_all_imported(client)


async def test_a_values_patch_answered_500_after_the_server_took_it_is_not_a_failed_case(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    # The server applies the PATCH, then a 500 takes the answer; the look at the display set is slow enough for the
    # import to finish, so the values are in place when gcbulk looks.
    faults(
        emulator,
        FaultRule(match="PATCH /api/v1/reader-studies/display-sets/*", status=500, phase="after", times=3),
        FaultRule(match="GET /api/v1/reader-studies/display-sets/*", latency_seconds=0.3, times=3),
    )
    with anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator)
    faults(emulator)
    assert outcome.failed == [] and outcome.done == 3
    assert one_display_set_per_title(emulator)
    await assert_all_imported(client)


async def test_a_display_set_post_whose_answer_a_gateway_lost_is_adopted_not_created_twice(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    # A 502 is the gateway's answer, not the server's: the server behind it may have acted (a 500 is the server's
    # own refusal: tests/engine/test_display_set_create.py).
    make_tutorial_tree(tmp_path / "cases", 3)
    faults(emulator, FaultRule(match="POST /api/v1/reader-studies/display-sets/", status=502, phase="after", times=3))
    with anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator)
    faults(emulator)
    assert outcome.failed == [] and outcome.done == 3
    assert one_display_set_per_title(emulator)
    await assert_all_imported(client)


async def _completed_upload(client: GrandChallengeClient, name: str) -> dict:
    upload = await client.create_upload(name)
    url = (await client.generate_presigned_urls(upload, [1]))[1]
    data = b"x" * 1024
    etag = await put_part(client.session, url, data, progress=lambda n: None)
    await client.complete_multipart_upload(upload, [{"PartNumber": 1, "ETag": etag}])
    return upload


async def test_values_whose_uploads_were_swept_before_the_patch_fail_with_that_reason(
    emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    display_set = await client.create_display_set("example-study", "swept")
    upload = await _completed_upload(client, "ct.mha")
    emulator.context.clock.advance(25 * 3600)  # docs/gc-api.md §1: the sweep deletes uploads a day old
    assert sweep_expired_uploads(emulator.context) == [upload["pk"]]
    planned = [
        PlannedValue(
            "ct-image",
            IMAGE,
            {"interface": "ct-image", "user_uploads": [client.upload_url(upload["pk"])]},
            (upload["pk"],),
        )
    ]
    with (
        anyio.fail_after(BOUND),
        pytest.raises(UploadsGoneBeforeAttach, match="ct-image were removed by the server before they were attached"),
    ):
        await send_values(
            client,
            target_for(client, TargetRef(READER_STUDY, "example-study")),
            display_set["pk"],
            planned,
            {"ct-image": IMAGE},
            policy=FAST_RETRIES,
            what="swept: values PATCH",
        )


async def test_list_parts_on_an_upload_the_server_completed_says_so_instead_of_failing_on_500s(
    emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    # What a ledger restored from an older copy meets: an upload it thinks open that the server completed.
    upload = await _completed_upload(client, "small.bin")
    with anyio.fail_after(BOUND), pytest.raises(UploadNoLongerOpen) as caught:
        await client.list_parts(upload)
    assert caught.value.status == "Completed"

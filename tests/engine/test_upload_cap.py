"""The server's 2000-uploads cap (docs/gc-api.md §1): met and waited out, or never met thanks to the live-upload ceiling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import AttemptsExhausted, UploadQuotaReached
from gcbulk.engine.upload.s3_parts import put_part
from tests.engine.conftest import (
    FAST_ENGINE,
    FAST_RETRIES,
    make_tutorial_tree,
    run_job,
    write_job,
)
from tests.engine.test_faults import assert_all_imported

# A tiny upload cap, so the run meets it (docs/gc-api.md §1: the server refuses uploads past the cap with a 400).
pytestmark = pytest.mark.emulator(import_delay_seconds=0.02, max_uploads_per_user=3, unverified_byte_quota=1024**2)


async def test_the_upload_cap_is_waited_out(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    # Each refusal is a wait of upload_cap_delay; the run allows as many as engine.server_limit_retries says.
    policy = dataclasses.replace(FAST_ENGINE.retry, upload_cap_delay=0.2, server_limit_retries=30)
    outcome = await run_job(write_job(tmp_path, emulator), emulator, dataclasses.replace(FAST_ENGINE, retry=policy))
    assert outcome.failed == [] and outcome.done == 3 and outcome.stats.retries > 0
    await assert_all_imported(client)


async def test_the_live_upload_ceiling_keeps_the_run_under_the_cap(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    outcome = await run_job(
        write_job(tmp_path, emulator), emulator, dataclasses.replace(FAST_ENGINE, live_upload_ceiling=3)
    )
    assert outcome.failed == [] and outcome.done == 3
    assert outcome.stats.retries == 0  # never met the server's 400
    await assert_all_imported(client)


async def test_the_byte_quota_is_waited_out_then_reported_with_the_servers_reason(
    emulator: RunningEmulator,
) -> None:
    # The unverified user's quota (docs/gc-api.md §1: checked at presign time) is 1 MiB in this emulator.
    async with GrandChallengeClient(
        base_url=emulator.base_url,
        token=emulator.tokens["outsider"],
        ca_file=emulator.ca_file,
        retry_policy=FAST_RETRIES,
    ) as outsider:
        upload = await outsider.create_upload("big.bin")
        url = (await outsider.generate_presigned_urls(upload, [1]))[1]
        data = b"x" * (2 * 1024**2)
        await put_part(outsider.session, url, data, progress=lambda n: None)
        with pytest.raises(AttemptsExhausted) as caught:
            await outsider.generate_presigned_urls(upload, [2])
    assert isinstance(caught.value.last_error, UploadQuotaReached)
    assert "Upload limit reached" in str(caught.value)

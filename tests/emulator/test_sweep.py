"""The hourly sweep of uploads older than 24 h (docs/gc-api.md §1), driven by the emulator clock, and the admin clock."""

from __future__ import annotations

import pytest

from gcbulk.emulator.objects import UPLOADS_BUCKET, MultipartUpload
from gcbulk.emulator.s3 import presigned_part_url

DAY = 24 * 3600


def _swept_only_by_hand(test):
    """The tests that call ``POST /_admin/sweep`` and check what it reports: the hourly task must not get there first
    when the clock jumps (that race failed these tests on Python 3.13), so its interval is set beyond the test."""
    return pytest.mark.parametrize("emulator_config", [{"sweep_interval_seconds": 30 * DAY}], indirect=True)(test)


async def _three_uploads(client) -> tuple[dict, dict, dict]:
    initialized = await client.create_upload("open.mha")
    await client.put_part(initialized, 1, b"part bytes")
    completed = await client.completed_upload(b"object bytes", "done.mha")
    aborted = await client.create_upload("gone.mha")
    assert (await client.abort(aborted)).status == 200
    return initialized, completed, aborted


@_swept_only_by_hand
async def test_the_sweep_deletes_every_upload_older_than_a_day_whatever_its_status(client, emulator):
    objects = emulator.context.objects
    initialized, completed, aborted = await _three_uploads(client)
    parts_folder = objects.multipart_dir(initialized["s3_upload_id"])
    assert parts_folder.exists() and objects.exists(UPLOADS_BUCKET, completed["key"])
    emulator.context.clock.advance(DAY + 1)
    swept = await client.call("POST", client.admin("sweep"))
    assert swept.status == 200
    assert set(swept.json()["deleted"]) == {initialized["pk"], completed["pk"], aborted["pk"]}
    for upload in (initialized, completed, aborted):
        assert (await client.call("GET", upload["api_url"])).status == 404
    # The Initialized upload's multipart upload is aborted, the Completed one's object deleted.
    assert not parts_folder.exists()
    assert not objects.exists(UPLOADS_BUCKET, completed["key"])


@_swept_only_by_hand
async def test_uploads_younger_than_a_day_survive_the_sweep(client, emulator):
    old = await client.create_upload("old.mha")
    emulator.context.clock.advance(DAY - 60)
    young = await client.create_upload("young.mha")
    emulator.context.clock.advance(120)
    swept = (await client.call("POST", client.admin("sweep"))).json()
    assert swept["deleted"] == [old["pk"]]
    assert (await client.call("GET", young["api_url"])).status == 200


async def test_the_hourly_task_runs_by_itself_once_the_clock_passes_the_hour(client):
    upload = await client.create_upload()
    advanced = await client.call("POST", client.admin("clock/advance"), json_body={"seconds": DAY + 3600})
    assert advanced.status == 200

    async def swept() -> bool:
        return (await client.call("GET", upload["api_url"])).status == 404

    await client.eventually(swept, "the hourly sweep to delete the day-old upload")


@_swept_only_by_hand
async def test_a_part_put_to_a_swept_upload_is_404_no_such_upload(client, emulator):
    upload = await client.create_upload()
    emulator.context.clock.advance(DAY + 1)
    await client.call("POST", client.admin("sweep"))
    # A URL signed just now, so only the missing multipart upload can refuse it.
    gone = MultipartUpload(upload["s3_upload_id"], UPLOADS_BUCKET, upload["key"])
    reply = await client.put(presigned_part_url(emulator.context, gone, 1), b"late part")
    assert reply.status == 404 and b"<Code>NoSuchUpload</Code>" in reply.body


async def test_the_admin_clock_moves_only_forward(client):
    before = (await client.call("GET", client.admin("clock"))).json()
    after = (await client.call("POST", client.admin("clock/advance"), json_body={"seconds": 3600})).json()
    backwards = await client.call("POST", client.admin("clock/advance"), json_body={"seconds": -1})
    missing = await client.call("POST", client.admin("clock/advance"), json_body={})
    assert 3600 <= after["timestamp"] - before["timestamp"] < 3660
    assert after["now"].endswith("Z")
    assert backwards.status == 400 and missing.status == 400
    assert "clock only moves forward" in backwards.json()["detail"]

"""Upload sessions as the real server keeps them (docs/gc-api.md §2, §10): tracked by their own pk, never cleaned up,
and segmentation masks refused on linking with the server's message and an upload list already emptied."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.emulator.study_flow import (
    create_display_set,
    get_display_set,
    patch_display_set,
    upload_file,
    wait_for_session,
    wait_for_value,
)
from tests.imaging import make_mha

SESSIONS = "cases/upload-sessions/"
OVERLAY_MESSAGE = (
    "Image validation for socket Airway Segmentation failed with error: The valid voxel values for "
    "this segmentation are: {0, 1}. This segmentation is invalid as it contains the voxel values: {3}.."
)


def make_voxels(path: Path, voxels: list[int], dtype: str = "uint8") -> Path:
    """A 2 × 8 × 8 mask whose voxels cycle through ``voxels``."""
    array = np.resize(np.array(voxels, dtype=dtype), (2, 8, 8))
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


async def _post_session(client, body: dict) -> dict:
    reply = await client.call("POST", client.api(SESSIONS), json_body=body)
    assert reply.status == 201, reply.body
    return reply.json()


async def test_a_session_without_target_stays_queued_with_an_empty_error_message(client, tmp_path):
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    session = await _post_session(client, {"uploads": [upload["api_url"]]})
    assert session["status"] == "Queued" and session["error_message"] == ""
    again = (await client.call("GET", session["api_url"])).json()
    assert again["status"] == "Queued" and again["error_message"] == ""


async def test_a_session_with_no_uploads_is_accepted(client):
    session = await _post_session(client, {"uploads": []})
    assert session["status"] == "Queued" and session["uploads"] == [] and session["user_uploads"] == []


async def test_a_queued_session_named_in_a_values_patch_imports_into_that_socket(client, tmp_path):
    display_set = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    session = await _post_session(client, {"uploads": [upload["api_url"]]})
    reply = await patch_display_set(
        client, display_set["pk"], {"values": [{"interface": "ct-image", "upload_session": session["api_url"]}]}
    )
    assert reply.status == 200 and reply.json()["values"] == []
    done = await wait_for_session(client, session["pk"])
    assert done["status"] == "Succeeded" and done["error_message"] == ""
    value = await wait_for_value(client, display_set["pk"], "ct-image")
    assert value["image"] == done["image_set"][0]


async def test_a_session_with_a_display_set_target_imports_and_is_tracked_by_its_pk(client, tmp_path):
    display_set = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    session = await _post_session(
        client, {"uploads": [upload["api_url"]], "display_set": display_set["pk"], "interface": "ct-image"}
    )
    assert session["status"] == "Queued"  # the serialized object predates the scheduling (docs/gc-api.md §2)
    assert (await wait_for_session(client, session["pk"]))["status"] == "Succeeded"
    await wait_for_value(client, display_set["pk"], "ct-image")


async def test_the_value_appears_a_moment_after_the_session_turns_succeeded(client, emulator, tmp_path):
    # A wide gap makes the window observable by polling; the default is 0.05 s.
    emulator.context.config = replace(emulator.context.config, link_delay_seconds=2.0)
    display_set = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    session = await _post_session(
        client, {"uploads": [upload["api_url"]], "display_set": display_set["pk"], "interface": "ct-image"}
    )
    assert (await wait_for_session(client, session["pk"]))["status"] == "Succeeded"
    assert (await get_display_set(client, display_set["pk"]))["values"] == []
    await wait_for_value(client, display_set["pk"], "ct-image")


async def test_sessions_and_uploads_cannot_be_deleted(client, tmp_path):
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    session = await _post_session(client, {"uploads": [upload["api_url"]]})
    forbidden = {"detail": "You do not have permission to perform this action."}
    for url in (session["api_url"], upload["api_url"]):
        reply = await client.call("DELETE", url)
        assert (reply.status, reply.json()) == (403, forbidden)
    assert (await client.call("GET", session["api_url"])).status == 200
    assert (await client.call("GET", upload["api_url"])).status == 200


async def test_finished_sessions_outlive_the_upload_sweep(client, emulator, tmp_path):
    display_set = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    session = await _post_session(
        client, {"uploads": [upload["api_url"]], "display_set": display_set["pk"], "interface": "ct-image"}
    )
    await wait_for_session(client, session["pk"])
    emulator.context.clock.advance(timedelta(days=3).total_seconds())
    reply = await client.call("POST", client.admin("sweep"))
    assert reply.status == 200, reply.body
    assert (await client.call("GET", session["api_url"])).json()["status"] == "Succeeded"
    listed = (await client.call("GET", client.api(SESSIONS))).json()
    assert session["pk"] in [s["pk"] for s in listed["results"]]


async def test_a_session_that_imports_some_files_succeeds_and_still_says_how_many_could_not_be_imported(
    client, tmp_path
):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    display_set = await create_display_set(client)
    uploads = [await upload_file(client, path) for path in (make_mha(tmp_path / "ct.mha"), notes)]
    session = await _post_session(
        client, {"uploads": [u["api_url"] for u in uploads], "display_set": display_set["pk"], "interface": "ct-image"}
    )
    done = await wait_for_session(client, session["pk"])
    assert (done["status"], done["error_message"], len(done["image_set"])) == (
        "Succeeded",
        "1 file could not be imported",
        1,
    )
    await wait_for_value(client, display_set["pk"], "ct-image")  # the one image is linked all the same


@pytest.mark.parametrize("path", ["patch", "target"])
async def test_a_mask_with_values_outside_the_overlay_fails_its_session_with_an_empty_upload_list(
    client, emulator, tmp_path, path
):
    display_set = await create_display_set(client)
    upload = await upload_file(client, make_voxels(tmp_path / "mask.mha", [0, 1, 3]))
    if path == "patch":
        session = await _post_session(client, {"uploads": [upload["api_url"]]})
        reply = await patch_display_set(
            client,
            display_set["pk"],
            {"values": [{"interface": "airway-segmentation", "upload_session": session["api_url"]}]},
        )
        assert reply.status == 200
    else:
        session = await _post_session(
            client,
            {"uploads": [upload["api_url"]], "display_set": display_set["pk"], "interface": "airway-segmentation"},
        )
    failed = await wait_for_session(client, session["pk"], until=("Failed",))
    assert failed["status"] == "Failed"
    assert failed["error_message"] == OVERLAY_MESSAGE
    assert failed["user_uploads"] == [] and failed["uploads"] == []
    assert len(failed["image_set"]) == 1
    assert (await client.call("GET", upload["api_url"])).status == 404
    assert (await get_display_set(client, display_set["pk"]))["values"] == []
    # The refused image is named by the session only: the image list by origin does not show it (docs/gc-api.md §10).
    by_origin = await client.call("GET", client.api(f"cases/images/?origin={session['pk']}"))
    assert (by_origin.status, by_origin.json()["count"]) == (200, 0)


async def test_after_one_patch_of_both_images_a_refused_mask_cannot_be_traced_to_its_display_set(client, tmp_path):
    # gcapi's way (one values PATCH with user_uploads for both images, docs/gc-api.md §10 "Why one request for both
    # images…"): the server makes the sessions and names them nowhere. Two cases whose masks are refused leave two
    # Failed sessions that say the same thing and keep nothing the client sent — no uploads, no display set — so
    # neither case can learn its reason; gcbulk's session per image (held by pk) is what keeps it.
    display_sets = [await create_display_set(client, title=f"case{n}") for n in range(2)]
    sent: list[str] = []
    for n, display_set in enumerate(display_sets):
        ct = await upload_file(client, make_mha(tmp_path / f"ct{n}.mha", (2, 8, 8)))
        mask = await upload_file(client, make_voxels(tmp_path / f"mask{n}.mha", [0, 1, 3]))
        sent += [display_set["pk"], ct["pk"], mask["pk"]]
        values = [
            {"interface": "ct-image", "user_uploads": [ct["api_url"]]},
            {"interface": "airway-segmentation", "user_uploads": [mask["api_url"]]},
        ]
        reply = await patch_display_set(client, display_set["pk"], {"values": values})
        assert reply.status == 200 and "session" not in str(reply.body)
    failed: list[dict] = []

    async def both_refused() -> bool:
        listed = (await client.call("GET", client.api(SESSIONS))).json()["results"]
        failed[:] = [session for session in listed if session["status"] == "Failed"]
        return len(failed) == 2

    await client.eventually(both_refused, "the two masks' sessions to fail")
    for display_set in display_sets:
        await wait_for_value(client, display_set["pk"], "ct-image")  # the CTs are in place; the masks never will be
    assert [session["error_message"] for session in failed] == [OVERLAY_MESSAGE, OVERLAY_MESSAGE]
    assert all(session["user_uploads"] == [] and session["uploads"] == [] for session in failed)
    assert not [pk for pk in sent if any(pk in str(session) for session in failed)]


@pytest.mark.parametrize(("voxels", "dtype"), [([0, 1, 300], "uint16"), ([0, 1], "float32")])
async def test_a_mask_that_is_not_8_bit_fails_with_the_segments_message(client, tmp_path, voxels, dtype):
    display_set = await create_display_set(client)
    upload = await upload_file(client, make_voxels(tmp_path / "mask.mha", voxels, dtype))
    session = await _post_session(
        client, {"uploads": [upload["api_url"]], "display_set": display_set["pk"], "interface": "airway-segmentation"}
    )
    failed = await wait_for_session(client, session["pk"], until=("Failed",))
    assert failed["status"] == "Failed" and failed["uploads"] == []
    assert failed["error_message"].startswith(
        "Image validation for socket Airway Segmentation failed with error: Image segments could not be determined"
    )


async def test_an_8_bit_mask_with_more_than_64_values_is_no_segmentation_as_on_the_servers_panimg(client, tmp_path):
    # The server's panimg 0.15.2 gives an 8-bit image of more than 64 distinct values no segments (in every format),
    # so the server says the segments could not be determined; the emulator's panimg 0.18.2 would keep 256, and the
    # emulator models the server's limit (emulator/panimg_import.py).
    display_set = await create_display_set(client)
    upload = await upload_file(client, make_voxels(tmp_path / "mask.mha", list(range(70)), "uint8"))
    session = await _post_session(
        client, {"uploads": [upload["api_url"]], "display_set": display_set["pk"], "interface": "airway-segmentation"}
    )
    failed = await wait_for_session(client, session["pk"], until=("Failed",))
    assert (failed["status"], failed["uploads"]) == ("Failed", [])
    assert failed["error_message"].startswith(
        "Image validation for socket Airway Segmentation failed with error: Image segments could not be determined, "
        "ensure the voxel values are integers and that it contains no more than 64 segments."
    )


async def test_a_mask_within_the_overlay_is_linked_with_its_segments(client, tmp_path):
    display_set = await create_display_set(client)
    upload = await upload_file(client, make_voxels(tmp_path / "mask.mha", [0, 1]))
    session = await _post_session(
        client, {"uploads": [upload["api_url"]], "display_set": display_set["pk"], "interface": "airway-segmentation"}
    )
    assert (await wait_for_session(client, session["pk"]))["status"] == "Succeeded"
    value = await wait_for_value(client, display_set["pk"], "airway-segmentation")
    image = (await client.call("GET", value["image"])).json()
    assert image["segments"] == [0, 1]


async def test_the_segmentation_socket_shows_its_overlay_values(client):
    reply = await client.call("GET", client.api("components/interfaces/?slug=airway-segmentation"))
    socket = reply.json()["results"][0]
    assert [s["voxel_value"] for s in socket["overlay_segments"]] == [1]

"""DICOM Image Set values (docs/gc-api.md §3, §10): uploads plus an image name, no upload session, uploads always deleted."""

from __future__ import annotations

import logging

import pytest

from tests.emulator.study_flow import (
    create_display_set,
    get_display_set,
    patch_display_set,
    upload_file,
    wait_for_value,
)
from tests.imaging import make_dicom_series, make_mha


async def _uploads(client, paths) -> list[dict]:
    return [await upload_file(client, path) for path in paths]


async def test_a_dicom_image_set_without_an_image_name_is_refused(client, tmp_path):
    display_set = await create_display_set(client)
    (upload,) = await _uploads(client, make_dicom_series(tmp_path, 1))
    reply = await patch_display_set(
        client, display_set["pk"], {"values": [{"interface": "dicom-image-set", "user_uploads": [upload["api_url"]]}]}
    )
    assert (reply.status, reply.json()) == (
        400,
        {"values": [{"non_field_errors": ["user_uploads and image_name are required for interface kind DCMIS"]}]},
    )


async def test_a_dicom_series_becomes_one_named_image_without_an_upload_session(client, tmp_path):
    display_set = await create_display_set(client)
    uploads = await _uploads(client, make_dicom_series(tmp_path, 3, rows=8, columns=6))
    reply = await patch_display_set(
        client,
        display_set["pk"],
        {
            "values": [
                {"interface": "dicom-image-set", "user_uploads": [u["api_url"] for u in uploads], "image_name": "Chest"}
            ]
        },
    )
    assert reply.status == 200, reply.body
    value = await wait_for_value(client, display_set["pk"], "dicom-image-set")
    image = (await client.call("GET", value["image"])).json()
    assert image["name"] == "Chest" and image["shape"] == [3, 8, 6]
    assert (await client.call("GET", client.api("cases/upload-sessions/"))).json()["count"] == 0
    for upload in uploads:
        assert (await client.call("GET", upload["api_url"])).status == 404


async def test_a_failed_dicom_image_set_leaves_no_value_no_session_and_no_uploads(client, tmp_path):
    display_set = await create_display_set(client)
    (upload,) = await _uploads(client, [make_mha(tmp_path / "not-dicom.mha")])
    reply = await patch_display_set(
        client,
        display_set["pk"],
        {"values": [{"interface": "dicom-image-set", "user_uploads": [upload["api_url"]], "image_name": "Chest"}]},
    )
    assert reply.status == 200

    async def upload_gone() -> bool:
        return (await client.call("GET", upload["api_url"])).status == 404

    await client.eventually(upload_gone, "the upload to be deleted after the failed import")
    assert (await get_display_set(client, display_set["pk"]))["values"] == []
    assert (await client.call("GET", client.api("cases/upload-sessions/"))).json()["count"] == 0


async def test_the_server_de_identifies_an_image_set_and_serves_its_instances(client, tmp_path):
    from tests.dicom.synthetic import PATIENT_ID, PATIENT_NAME, identified_series

    display_set = await create_display_set(client)
    paths = identified_series(tmp_path / "s", 3)
    uploads = await _uploads(client, paths)
    reply = await patch_display_set(
        client,
        display_set["pk"],
        {
            "values": [
                {"interface": "dicom-image-set", "user_uploads": [u["api_url"] for u in uploads], "image_name": "Chest"}
            ]
        },
    )
    assert reply.status == 200
    value = await wait_for_value(client, display_set["pk"], "dicom-image-set")
    image = (await client.call("GET", value["image"])).json()
    assert image["dicom_image_set"]["image_set_id"]

    listing = (await client.call("GET", value["image"] + "dicom/instances/")).json()

    assert len(listing["instances"]) == 3
    for instance in listing["instances"]:
        assert instance["get_instance"]["method"] == "GET"
        stored = await client.call("GET", instance["get_instance"]["url"], user=None)
        assert stored.status == 200
        assert PATIENT_NAME.encode() not in stored.body and PATIENT_ID.encode() not in stored.body
        assert instance["sop_instance_uid"].encode() in stored.body


async def test_an_image_set_of_two_patients_is_refused_invisibly_and_its_uploads_deleted(client, tmp_path, caplog):
    from tests.dicom.synthetic import edit, identified_series

    caplog.set_level("INFO", logger="gcbulk.emulator.dicom_sets")
    display_set = await create_display_set(client)
    paths = identified_series(tmp_path / "s", 2)
    edit(paths[1:], PatientID="SOMEONE-ELSE")
    uploads = await _uploads(client, paths)
    reply = await patch_display_set(
        client,
        display_set["pk"],
        {
            "values": [
                {"interface": "dicom-image-set", "user_uploads": [u["api_url"] for u in uploads], "image_name": "Chest"}
            ]
        },
    )
    assert reply.status == 200

    async def uploads_gone() -> bool:
        return [(await client.call("GET", u["api_url"])).status for u in uploads] == [404] * len(uploads)

    await client.eventually(uploads_gone, "the uploads to be deleted after the refused import")
    assert (await get_display_set(client, display_set["pk"]))["values"] == []
    assert (await client.call("GET", client.api("cases/upload-sessions/"))).json()["count"] == 0
    assert "Element 'PatientID' has differing values" in caplog.text  # only the server's log says why (§10)


async def test_an_image_without_an_image_set_has_no_instances(client, tmp_path):
    display_set = await create_display_set(client)
    uploads = await _uploads(client, [make_mha(tmp_path / "ct.mha")])
    await patch_display_set(
        client,
        display_set["pk"],
        {"values": [{"interface": "ct-image", "user_uploads": [u["api_url"] for u in uploads]}]},
    )
    value = await wait_for_value(client, display_set["pk"], "ct-image")
    assert (await client.call("GET", value["image"] + "dicom/instances/")).status == 404


@pytest.mark.parametrize(
    ("tag", "other"),
    [("StudyID", "S2"), ("StudyDate", "20240102"), ("AccessionNumber", "ACC-2"), ("SeriesNumber", 7)],
)
async def test_an_image_set_whose_files_differ_in_one_of_the_seven_tags_never_appears(
    client, tmp_path, caplog, tag, other
):
    """The server asserts StudyInstanceUID, SeriesInstanceUID, PatientID, StudyID, StudyDate, AccessionNumber and
    SeriesNumber equal in every file (docs/gc-api.md §11); the refusal is silent, as there."""
    from tests.dicom.synthetic import edit, identified_series

    display_set = await create_display_set(client)
    paths = identified_series(tmp_path / "s", 3)
    edit(paths, StudyID="S1", StudyDate="20240101", AccessionNumber="ACC-1")
    edit(paths[2:], **{tag: other})
    uploads = await _uploads(client, paths)
    caplog.set_level(logging.INFO, logger="gcbulk.emulator.dicom_sets")
    reply = await patch_display_set(
        client,
        display_set["pk"],
        {
            "values": [
                {"interface": "dicom-image-set", "user_uploads": [u["api_url"] for u in uploads], "image_name": "CT"}
            ]
        },
    )
    assert reply.status == 200

    async def uploads_gone() -> bool:
        return all([(await client.call("GET", u["api_url"])).status == 404 for u in uploads])

    await client.eventually(uploads_gone, "the uploads to be deleted after the refused import")
    assert (await get_display_set(client, display_set["pk"]))["values"] == []
    assert f"Element {tag!r} has differing values across files: these must be identical." in caplog.text

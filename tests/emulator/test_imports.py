"""Upload sessions and the import worker (docs/gc-api.md §2, §9): real files in, images with the right properties out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gcbulk.emulator.image_builder import InputFile, build_images
from tests.emulator.study_flow import (
    admin_answer,
    create_display_set,
    get_display_set,
    patch_display_set,
    question_pk,
    session_for_display_set,
    set_image_from_files,
    upload_file,
    wait_for_session,
    wait_for_value,
)
from tests.imaging import make_dicom_series, make_mha, make_mhd_zraw, make_tiff

SESSIONS = "cases/upload-sessions/"


pytestmark = pytest.mark.emulator(max_uploads_per_session=3)


async def _image(client, url: str, user: str = "editor") -> dict:
    reply = await client.call("GET", url, user=user)
    assert reply.status == 200, reply.body
    return reply.json()


def _files(kind: str, directory: Path) -> tuple[list[Path], list[int]]:
    """Test files of one image of ``kind`` and the image's expected Grand Challenge ``shape``."""
    if kind == "mha":
        return [make_mha(directory / "ct.mha", (6, 10, 12))], [6, 10, 12]
    if kind == "mhd+zraw":
        return list(make_mhd_zraw(directory / "ct.mhd", (3, 8, 9))), [3, 8, 9]
    if kind == "mhd+raw":
        return list(make_mhd_zraw(directory / "ct.mhd", (3, 8, 9), compress=False)), [3, 8, 9]
    if kind == "tiff":
        return [make_tiff(directory / "slide.tif", (20, 30))], [20, 30]
    if kind == "rgb tiff":
        return [make_tiff(directory / "photo.tiff", (20, 30), rgb=True)], [20, 30, 3]
    if kind == "dicom series":
        return make_dicom_series(directory, 4, rows=12, columns=10), [4, 12, 10]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["mha", "mhd+zraw", "mhd+raw", "tiff", "rgb tiff", "dicom series"])
async def test_each_supported_format_imports_to_one_image_on_the_socket(client, emulator, tmp_path, kind):
    files, shape = _files(kind, tmp_path)
    created = await create_display_set(client)
    await set_image_from_files(client, created["pk"], "ct-image", files)
    value = await wait_for_value(client, created["pk"], "ct-image")
    image = await _image(client, value["image"])
    assert image["shape"] == shape
    assert image["width"] == shape[-1 if kind != "rgb tiff" else -2]
    assert [f["image_type"] for f in image["files"]] == ["MHD"]
    assert image["files"][0]["file"].endswith(".mha")
    # Only DICOM carries a modality; the API shows it as an object (docs/gc-api.md §8).
    assert image["modality"] == ({"modality": "CT"} if kind == "dicom series" else None)


async def test_an_import_keeps_shape_spacing_and_element_type_but_rewrites_the_bytes(client, emulator, tmp_path):
    original = make_mha(tmp_path / "ct.mha", (5, 7, 9), spacing=(0.5, 0.75, 2.5))
    created = await create_display_set(client)
    await set_image_from_files(client, created["pk"], "ct-image", [original])
    image = await _image(client, (await wait_for_value(client, created["pk"], "ct-image"))["image"])
    assert (image["voxel_width_mm"], image["voxel_height_mm"], image["voxel_depth_mm"]) == (0.5, 0.75, 2.5)
    assert (image["width"], image["height"], image["depth"], image["color_space"]) == (9, 7, 5, "GRAY")
    stored = emulator.context.store.images[image["pk"]]
    stored_path = emulator.context.objects.object_path("images", stored.files[0].object_key)
    assert stored_path.read_bytes() != original.read_bytes()  # re-written compressed, as the real importer does
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(stored_path))), sitk.GetArrayFromImage(sitk.ReadImage(str(original)))
    )
    assert stored.element_type == "16-bit signed integer"


async def test_a_succeeded_import_consumes_its_uploads(client, emulator, tmp_path):
    created = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    await patch_display_set(
        client, created["pk"], {"values": [{"interface": "ct-image", "user_uploads": [upload["api_url"]]}]}
    )
    session = await wait_for_session(client, await session_for_display_set(emulator, created["pk"], "ct-image"))
    assert session["status"] == "Succeeded" and len(session["image_set"]) == 1
    assert session["uploads"] == [] and session["user_uploads"] == []
    assert (await client.call("GET", upload["api_url"])).status == 404


async def test_a_corrupt_file_fails_the_session_with_the_servers_message(client, emulator, tmp_path):
    created = await create_display_set(client)
    corrupt = tmp_path / "ct.mha"
    corrupt.write_text("this is text, not an image")
    upload = await upload_file(client, corrupt)
    reply = await patch_display_set(
        client, created["pk"], {"values": [{"interface": "ct-image", "user_uploads": [upload["api_url"]]}]}
    )
    assert (reply.status, reply.json()["values"]) == (200, [])  # docs/gc-api.md §9: the PATCH itself succeeds
    session = await wait_for_session(client, await session_for_display_set(emulator, created["pk"], "ct-image"))
    assert session["status"] == "Failed"
    assert session["error_message"] == (
        "Image validation for socket CT Image failed with error: 1 file could not be imported."
    )
    assert (await get_display_set(client, created["pk"]))["values"] == []
    assert (await client.call("GET", upload["api_url"])).status == 200  # failed imports leave uploads to the sweep


async def test_two_images_for_one_socket_fail_the_session(client, emulator, tmp_path):
    created = await create_display_set(client)
    files = [make_mha(tmp_path / "a.mha", seed=1), make_mha(tmp_path / "b.mha", seed=2)]
    await set_image_from_files(client, created["pk"], "ct-image", files)
    # Refused on linking, which comes after the session turned Succeeded (docs/gc-api.md §10).
    session = await wait_for_session(
        client, await session_for_display_set(emulator, created["pk"], "ct-image"), until=("Failed",)
    )
    assert session["status"] == "Failed"
    assert session["error_message"] == (
        "Image validation for socket CT Image failed with error: Image imports should result in a single image."
    )
    assert (await get_display_set(client, created["pk"]))["values"] == []


async def test_a_session_without_target_shows_queued_and_stays_queued_until_used(client, emulator, tmp_path):
    created = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    reply = await client.call("POST", client.api(SESSIONS), json_body={"uploads": [upload["api_url"]]})
    session = reply.json()
    assert reply.status == 201
    assert session["status"] == "Queued" and session["uploads"] == [upload["api_url"]]
    assert session["user_uploads"] == [upload["pk"]]
    assert session["creator"] == emulator.context.store.user_by_username("editor").pk
    # A targeted import scheduled later finishes; the untargeted session was never scheduled, so it is still Queued.
    other = await upload_file(client, make_mha(tmp_path / "other.mha"))
    targeted = await client.call(
        "POST",
        client.api(SESSIONS),
        json_body={"uploads": [other["api_url"]], "display_set": created["pk"], "interface": "generic-overlay"},
    )
    assert (await wait_for_session(client, targeted.json()["pk"]))["status"] == "Succeeded"
    assert (await client.call("GET", session["api_url"])).json()["status"] == "Queued"
    # Used as ``upload_session`` in a value PATCH (gcapi 0.13's flow), it is imported into that socket.
    await patch_display_set(
        client, created["pk"], {"values": [{"interface": "ct-image", "upload_session": session["api_url"]}]}
    )
    assert (await wait_for_session(client, session["pk"]))["status"] == "Succeeded"
    assert (await wait_for_value(client, created["pk"], "ct-image"))["image"]


async def test_a_session_with_a_display_set_target_answers_queued_then_imports(client, emulator, tmp_path):
    created = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    reply = await client.call(
        "POST",
        client.api(SESSIONS),
        json_body={"uploads": [upload["api_url"]], "display_set": created["pk"], "interface": "ct-image"},
    )
    assert (reply.status, reply.json()["status"]) == (201, "Queued")
    assert emulator.context.store.upload_sessions[reply.json()["pk"]].status in ("Re-Queued", "Succeeded")
    done = await wait_for_session(client, reply.json()["pk"])
    value = await wait_for_value(client, created["pk"], "ct-image")
    assert value["image"] == done["image_set"][0]


async def test_a_used_or_foreign_session_is_an_invalid_hyperlink_in_a_value(client, tmp_path):
    created = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"), user="reader1")
    foreign = (
        await client.call("POST", client.api(SESSIONS), user="reader1", json_body={"uploads": [upload["api_url"]]})
    ).json()
    reply = await patch_display_set(
        client, created["pk"], {"values": [{"interface": "ct-image", "upload_session": foreign["api_url"]}]}
    )
    assert reply.json() == {"values": [{"upload_session": ["Invalid hyperlink - Object does not exist."]}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"interface": "ct-image"},
            "An interface can only be defined for archive, archive item or display set uploads.",
        ),
        ({"display_set": "DS"}, "An interface needs to be defined to upload to a display set."),
    ],
)
async def test_session_target_rules_are_400_non_field_errors(client, tmp_path, body, message):
    created = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    body = {key: created["pk"] if value == "DS" else value for key, value in body.items()}
    reply = await client.call("POST", client.api(SESSIONS), json_body={"uploads": [upload["api_url"]], **body})
    assert (reply.status, reply.json()) == (400, {"non_field_errors": [message]})


async def test_session_uploads_must_be_own_completed_uploads(client, tmp_path):
    pending = await client.create_upload("ct.mha")
    foreign = await upload_file(client, make_mha(tmp_path / "ct.mha"), user="reader1")
    for url in (pending["api_url"], foreign["api_url"]):
        reply = await client.call("POST", client.api(SESSIONS), json_body={"uploads": [url]})
        assert (reply.status, reply.json()) == (400, {"uploads": ["Invalid hyperlink - Object does not exist."]})
    missing = await client.call("POST", client.api(SESSIONS), json_body={})
    assert missing.json() == {"uploads": ["This field is required."]}


async def test_too_many_uploads_or_duplicate_names_in_a_session_are_400(client, tmp_path):
    uploads = [await upload_file(client, make_mha(tmp_path / f"{n}.mha")) for n in range(4)]
    too_many = await client.call("POST", client.api(SESSIONS), json_body={"uploads": [u["api_url"] for u in uploads]})
    assert too_many.json() == {
        "non_field_errors": ["Too many files uploaded. A maximum of 3 files may be uploaded per session."]
    }
    twin = await upload_file(client, make_mha(tmp_path / "twin" / "0.mha"))
    duplicate = await client.call(
        "POST", client.api(SESSIONS), json_body={"uploads": [uploads[0]["api_url"], twin["api_url"]]}
    )
    assert duplicate.json() == {"non_field_errors": ["Filenames must be unique"]}


async def test_duplicate_filenames_in_user_uploads_fail_the_import(client, emulator, tmp_path):
    created = await create_display_set(client)
    files = [make_mha(tmp_path / "ct.mha"), make_mha(tmp_path / "twin" / "ct.mha")]
    await set_image_from_files(client, created["pk"], "ct-image", files)
    session = await wait_for_session(client, await session_for_display_set(emulator, created["pk"], "ct-image"))
    assert session["error_message"] == (
        "Image validation for socket CT Image failed with error: "
        "Duplicate files uploaded, please try again with a unique set of files."
    )


async def test_sessions_are_listed_to_their_creator_only(client, tmp_path):
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    session = (await client.call("POST", client.api(SESSIONS), json_body={"uploads": [upload["api_url"]]})).json()
    own = await client.call("GET", client.api(SESSIONS))
    other = await client.call("GET", client.api(SESSIONS), user="reader1")
    assert [s["pk"] for s in own.json()["results"]] == [session["pk"]]
    assert other.json()["count"] == 0
    assert (await client.call("GET", session["api_url"], user="reader1")).status == 404
    assert set(session) == {
        "pk",
        "creator",
        "status",
        "error_message",
        "image_set",
        "api_url",
        "user_uploads",
        "uploads",
    }


async def test_a_mask_session_for_an_answer_sets_its_answer_image(client, emulator, tmp_path):
    created = await create_display_set(client)
    answer = await admin_answer(
        client, creator="reader1", question=question_pk(emulator, "Mask"), display_set=created["pk"], answer=None
    )
    upload = await upload_file(client, make_mha(tmp_path / "mask.mha", dtype="uint8"), user="reader1")
    reply = await client.call(
        "POST", client.api(SESSIONS), user="reader1", json_body={"uploads": [upload["api_url"]], "answer": answer["pk"]}
    )
    assert reply.status == 201
    done = await wait_for_session(client, reply.json()["pk"], user="reader1")
    shown: dict = {}

    async def linked() -> bool:
        # The image is linked a moment after the session turns Succeeded (docs/gc-api.md §10).
        shown.update((await client.call("GET", answer["api_url"], user="reader1")).json())
        return shown["answer_image"] is not None

    await client.eventually(linked, "the answer image to be linked")
    assert shown["answer"] == {"upload_session_pk": reply.json()["pk"]}
    assert shown["answer_image"] == done["image_set"][0]


async def test_a_non_mask_answer_takes_no_image(client, emulator, tmp_path):
    created = await create_display_set(client)
    answer = await admin_answer(
        client, creator="reader1", question=question_pk(emulator, "Bool"), display_set=created["pk"], answer=None
    )
    upload = await upload_file(client, make_mha(tmp_path / "mask.mha"), user="reader1")
    reply = await client.call(
        "POST", client.api(SESSIONS), user="reader1", json_body={"uploads": [upload["api_url"]], "answer": answer["pk"]}
    )
    assert reply.json() == {"answer": ["This question does not accept image type answers."]}


def test_large_images_are_streamed_slab_by_slab_to_the_same_pixels(tmp_path):
    source = make_mha(tmp_path / "big.mha", (9, 20, 30), dtype="float32")
    result = build_images([InputFile("big.mha", source)], tmp_path / "work", in_memory_limit_bytes=1, slab_bytes=5000)
    [image] = result.images
    rewritten = sitk.ReadImage(str(image.mha_path))
    original = sitk.ReadImage(str(source))
    assert np.array_equal(sitk.GetArrayFromImage(rewritten), sitk.GetArrayFromImage(original))
    assert rewritten.GetSpacing() == original.GetSpacing() and image.element_type == "32-bit float"


def test_unsupported_files_and_orphan_data_files_are_file_errors(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    _, data = make_mhd_zraw(tmp_path / "ct.mhd")
    result = build_images([InputFile("notes.txt", notes), InputFile("ct.zraw", data)], tmp_path / "work")
    assert result.images == []
    assert set(result.file_errors) == {"notes.txt", "ct.zraw"}
    assert result.default_error_message == "2 files could not be imported"


# Imports that stay scheduled for the whole test, and a limit of one active import per user.
@pytest.mark.emulator(import_delay_seconds=600, max_active_imports_per_user=1)
class TestActiveImportLimit:
    async def test_a_user_at_the_limit_of_active_tiff_imports_gets_a_400(self, client, tmp_path):
        created = await create_display_set(client)
        first = await upload_file(client, make_tiff(tmp_path / "a.tif", (20, 30)))
        second = await upload_file(client, make_mha(tmp_path / "b.mha"))
        accepted = await client.call(
            "POST",
            client.api(SESSIONS),
            json_body={"uploads": [first["api_url"]], "display_set": created["pk"], "interface": "ct-image"},
        )
        refused = await client.call("POST", client.api(SESSIONS), json_body={"uploads": [second["api_url"]]})
        other_user = await upload_file(client, make_mha(tmp_path / "c.mha"), user="reader1")
        assert accepted.status == 201
        assert (refused.status, refused.json()) == (
            400,
            {
                "non_field_errors": [
                    "You currently have 1 active image post processing tasks. "
                    "Please wait for them to complete before trying again."
                ]
            },
        )
        assert (
            await client.call(
                "POST", client.api(SESSIONS), user="reader1", json_body={"uploads": [other_user["api_url"]]}
            )
        ).status == 201

    async def test_active_imports_of_other_formats_do_not_count_toward_the_limit(self, client, tmp_path):
        created = await create_display_set(client)
        first = await upload_file(client, make_mha(tmp_path / "a.mha"))
        second = await upload_file(client, make_mha(tmp_path / "b.mha"))
        for upload, target in ((first, {"display_set": created["pk"], "interface": "ct-image"}), (second, {})):
            reply = await client.call(
                "POST", client.api(SESSIONS), json_body={"uploads": [upload["api_url"]], **target}
            )
            assert reply.status == 201, reply.body


NO_SUCH_PK = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("target", "errors"),
    [
        (
            {"display_set": NO_SUCH_PK, "interface": "ct-image"},
            {"display_set": [f'Invalid pk "{NO_SUCH_PK}" - object does not exist.']},
        ),
        ({"display_set": "DS", "interface": "nope"}, {"interface": ["Object with slug=nope does not exist."]}),
        ({"answer": NO_SUCH_PK}, {"answer": [f'Invalid pk "{NO_SUCH_PK}" - object does not exist.']}),
        ({"archive": "my-archive"}, {"archive": ["Object with slug=my-archive does not exist."]}),
        ({"archive_item": "1"}, {"archive_item": ['Invalid pk "1" - object does not exist.']}),
        ({"uploads": "a-url"}, {"uploads": ['Expected a list of items but got type "str".']}),
    ],
)
async def test_bad_session_fields_are_400_per_field(client, tmp_path, target, errors):
    created = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    body = {"uploads": [upload["api_url"]], **target}
    if body.get("display_set") == "DS":
        body["display_set"] = created["pk"]
    reply = await client.call("POST", client.api(SESSIONS), json_body=body)
    assert (reply.status, reply.json()) == (400, errors)


async def test_a_reader_may_not_target_a_display_set_they_can_only_view(client, tmp_path):
    created = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"), user="reader1")
    reply = await client.call(
        "POST",
        client.api(SESSIONS),
        user="reader1",
        json_body={"uploads": [upload["api_url"]], "display_set": created["pk"], "interface": "ct-image"},
    )
    assert (reply.status, reply.json()) == (
        400,
        {"display_set": [f'Invalid pk "{created["pk"]}" - object does not exist.']},
    )


async def test_a_session_cannot_target_both_a_display_set_and_an_answer(client, emulator, tmp_path):
    created = await create_display_set(client)
    answer = await admin_answer(
        client, creator="editor", question=question_pk(emulator, "Mask"), display_set=created["pk"], answer=None
    )
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    reply = await client.call(
        "POST",
        client.api(SESSIONS),
        json_body={
            "uploads": [upload["api_url"]],
            "display_set": created["pk"],
            "interface": "ct-image",
            "answer": answer["pk"],
        },
    )
    message = "Only one of archive, archive item, answer or reader study can be set"
    assert (reply.status, reply.json()) == (400, {"non_field_errors": [message]})


async def test_an_answer_with_an_image_pending_takes_no_second_session(client, emulator, tmp_path):
    created = await create_display_set(client)
    answer = await admin_answer(
        client, creator="reader1", question=question_pk(emulator, "Mask"), display_set=created["pk"], answer=None
    )
    bodies = []
    for name in ("a.mha", "b.mha"):
        upload = await upload_file(client, make_mha(tmp_path / name), user="reader1")
        bodies.append({"uploads": [upload["api_url"]], "answer": answer["pk"]})
    first = await client.call("POST", client.api(SESSIONS), user="reader1", json_body=bodies[0])
    second = await client.call("POST", client.api(SESSIONS), user="reader1", json_body=bodies[1])
    assert first.status == 201
    assert second.json() == {"answer": ["This answer already has an image assignment pending"]}

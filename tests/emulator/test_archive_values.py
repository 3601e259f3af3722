"""Archive items' values (docs/gc-api.md §12): set through the display sets' code path, imported from uploads and
upload sessions (into the archive: one item per image; into an item), and values naming an existing image, accepted
with the ``view_image`` permission and refused without it (for display sets too)."""

from __future__ import annotations

import pytest

from gcbulk.emulator.importer import add_images_to_archive
from tests.emulator.archive_flow import (
    ARCHIVE_SLUG,
    ITEMS,
    create_item,
    example_archive,
    get_item,
    start_session,
    wait_for_item_value,
)
from tests.emulator.study_flow import create_display_set, upload_file, wait_for_session, wait_for_value
from tests.imaging import make_dicom_series, make_mha

# -- archive items: values --------------------------------------------------------------------------------------------


async def test_a_patch_sets_a_json_value_through_the_display_sets_validation(client):
    created = await create_item(client)
    bad = await client.call(
        "PATCH", client.api(f"{ITEMS}{created['pk']}/"), json_body={"values": [{"interface": "nope", "value": 1}]}
    )
    good = await client.call(
        "PATCH",
        client.api(f"{ITEMS}{created['pk']}/"),
        user="reader2",
        json_body={"values": [{"interface": "patient-age", "value": 61}]},
    )
    assert (bad.status, bad.json()) == (400, {"values": [{"interface": ["Object with slug=nope does not exist."]}]})
    assert good.status == 200
    assert [(v["interface"], v["value"]) for v in good.json()["values"]] == [("patient-age", 61)]
    shown = await get_item(client, created["pk"], user="reader1")
    assert [(v["interface"]["slug"], v["value"]) for v in shown["values"]] == [("patient-age", 61)]


async def test_viewers_get_403_on_a_patch_and_outsiders_404(client):
    created = await create_item(client)
    body = {"title": "mine"}
    viewer = await client.call("PATCH", client.api(f"{ITEMS}{created['pk']}/"), user="reader1", json_body=body)
    outsider = await client.call("PATCH", client.api(f"{ITEMS}{created['pk']}/"), user="outsider", json_body=body)
    assert (viewer.status, viewer.json()) == (403, {"detail": "You do not have permission to perform this action."})
    assert outsider.status == 404


async def test_a_put_removes_the_sockets_it_does_not_list(client):
    created = await create_item(client)
    url = client.api(f"{ITEMS}{created['pk']}/")
    await client.call("PATCH", url, json_body={"values": [{"interface": "patient-age", "value": 61}]})
    reply = await client.call("PUT", url, json_body={"values": [{"interface": "clinical-notes", "value": "ok"}]})
    assert [v["interface"] for v in reply.json()["values"]] == ["clinical-notes"]


async def test_user_uploads_on_an_item_are_imported_into_its_value(client, tmp_path):
    created = await create_item(client, title="ct")
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha", (4, 8, 8)))
    reply = await client.call(
        "PATCH",
        client.api(f"{ITEMS}{created['pk']}/"),
        json_body={"values": [{"interface": "ct-image", "user_uploads": [upload["api_url"]]}]},
    )
    assert reply.status == 200
    value = await wait_for_item_value(client, created["pk"], "ct-image")
    image = await client.call("GET", value["image"], user="reader1")  # an archive user may view the item's image
    assert (image.status, image.json()["shape"]) == (200, [4, 8, 8])


async def test_a_file_upload_on_an_item_becomes_a_file_value_members_download(client, tmp_path):
    created = await create_item(client)
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 emulator test report")
    upload = await upload_file(client, report)
    reply = await client.call(
        "PATCH",
        client.api(f"{ITEMS}{created['pk']}/"),
        json_body={"values": [{"interface": "report-pdf", "user_upload": upload["api_url"]}]},
    )
    assert reply.status == 200
    value = await wait_for_item_value(client, created["pk"], "report-pdf")
    assert value["file"].endswith("/report.pdf") and value["image"] is None
    as_user = await client.call("GET", value["file"], user="reader1")
    as_outsider = await client.call("GET", value["file"], user="outsider")
    assert as_user.status == 302  # to a signed URL on the emulator's S3
    assert (as_outsider.status, as_outsider.text) == (404, "Not found.")


async def test_a_dicom_image_set_on_an_item_is_built_from_its_uploads(client, tmp_path):
    created = await create_item(client)
    files = make_dicom_series(tmp_path / "dcm", 3)
    uploads = [await upload_file(client, path) for path in files]
    reply = await client.call(
        "PATCH",
        client.api(f"{ITEMS}{created['pk']}/"),
        json_body={
            "values": [
                {
                    "interface": "dicom-image-set",
                    "user_uploads": [u["api_url"] for u in uploads],
                    "image_name": "Chest",
                }
            ]
        },
    )
    assert reply.status == 200
    value = await wait_for_item_value(client, created["pk"], "dicom-image-set")
    image = await client.call("GET", value["image"], user="reader1")
    assert (image.status, image.json()["name"]) == (200, "Chest")


# -- upload sessions --------------------------------------------------------------------------------------------------


async def test_a_session_into_the_archive_makes_one_item_per_image(client, emulator, tmp_path):
    uploads = [
        await upload_file(client, make_mha(tmp_path / f"ct{n}.mha", (2, 4, 4), seed=n), user="reader2")
        for n in range(2)
    ]
    reply = await start_session(
        client, {"uploads": [u["api_url"] for u in uploads], "archive": ARCHIVE_SLUG}, "reader2"
    )
    assert reply.status == 201
    session = await wait_for_session(client, reply.json()["pk"], user="reader2")
    assert session["status"] == "Succeeded" and len(session["image_set"]) == 2

    async def two_items() -> bool:
        listed = await client.call("GET", client.api(f"{ITEMS}?archive={example_archive(emulator).pk}"))
        return listed.json()["count"] == 2

    await client.eventually(two_items, "one archive item per image")
    listed = (await client.call("GET", client.api(f"{ITEMS}?archive={example_archive(emulator).pk}"))).json()
    values = [item["values"] for item in listed["results"]]
    assert all(item["title"] == "" for item in listed["results"])
    # Without an interface each image becomes a generic-medical-image value.
    assert sorted(v[0]["image"] for v in values) == sorted(session["image_set"])
    assert {v[0]["interface"]["slug"] for v in values} == {"generic-medical-image"}

    # The server's task may run twice (acks-late); the second run adds no item.
    store = emulator.context.store
    add_images_to_archive(
        emulator.context,
        store.upload_sessions[session["pk"]],
        [store.images[pk] for pk in store.upload_sessions[session["pk"]].image_pks],
    )
    assert len(store.archive_items) == 2


async def test_a_session_into_the_archive_with_an_interface_uses_that_socket(client, emulator, tmp_path):
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha", (2, 4, 4)))
    body = {"uploads": [upload["api_url"]], "archive": ARCHIVE_SLUG, "interface": "ct-image"}
    session = await wait_for_session(client, (await start_session(client, body)).json()["pk"])
    assert session["status"] == "Succeeded"

    async def one_item() -> bool:
        return len(emulator.context.store.archive_items) == 1

    await client.eventually(one_item, "the archive item of the image")
    [item] = emulator.context.store.archive_items.values()
    value = await wait_for_item_value(client, item.pk, "ct-image")
    assert [value["image"]] == session["image_set"]


async def test_a_session_into_an_item_sets_the_named_socket(client, tmp_path):
    created = await create_item(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha", (2, 4, 4)))
    body = {"uploads": [upload["api_url"]], "archive_item": created["pk"], "interface": "ct-image"}
    reply = await start_session(client, body)
    assert reply.status == 201
    value = await wait_for_item_value(client, created["pk"], "ct-image")
    assert value["image"]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"archive": ARCHIVE_SLUG}, {"archive": [f"Object with slug={ARCHIVE_SLUG} does not exist."]}),
        ({"archive": "no-such-archive"}, {"archive": ["Object with slug=no-such-archive does not exist."]}),
    ],
)
async def test_a_viewer_cannot_upload_into_the_archive(client, tmp_path, body, errors):
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha", (2, 4, 4)), user="reader1")
    reply = await start_session(client, {"uploads": [upload["api_url"]], **body}, user="reader1")
    assert (reply.status, reply.json()) == (400, errors)


async def test_an_item_target_needs_an_interface_and_change_rights(client, tmp_path):
    created = await create_item(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha", (2, 4, 4)))
    no_interface = await start_session(client, {"uploads": [upload["api_url"]], "archive_item": created["pk"]})
    viewer_upload = await upload_file(client, make_mha(tmp_path / "v.mha", (2, 4, 4)), user="reader1")
    as_viewer = await start_session(
        client,
        {"uploads": [viewer_upload["api_url"]], "archive_item": created["pk"], "interface": "ct-image"},
        user="reader1",
    )
    two_targets = await start_session(
        client, {"uploads": [upload["api_url"]], "archive_item": created["pk"], "archive": ARCHIVE_SLUG}
    )
    assert (no_interface.status, no_interface.json()) == (
        400,
        {"non_field_errors": ["An interface needs to be defined to upload to an archive item."]},
    )
    assert (as_viewer.status, as_viewer.json()) == (
        400,
        {"archive_item": [f'Invalid pk "{created["pk"]}" - object does not exist.']},
    )
    assert (two_targets.status, two_targets.json()) == (
        400,
        {"non_field_errors": ["Only one of archive, archive item, answer or reader study can be set"]},
    )


# -- existing images as values ----------------------------------------------------------------------------------------


async def test_an_item_value_may_name_an_image_the_user_may_view(client, tmp_path):
    source = await create_item(client, title="source")
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha", (2, 4, 4)))
    await client.call(
        "PATCH",
        client.api(f"{ITEMS}{source['pk']}/"),
        json_body={"values": [{"interface": "ct-image", "user_uploads": [upload["api_url"]]}]},
    )
    image = (await wait_for_item_value(client, source["pk"], "ct-image"))["image"]

    # Into a reader study (the editor edits it and views the archive's image): no bytes move, the same image is shown.
    display_set = await create_display_set(client, title="copied")
    copied = await client.call(
        "PATCH",
        client.api(f"reader-studies/display-sets/{display_set['pk']}/"),
        json_body={"values": [{"interface": "ct-image", "image": image}]},
    )
    assert copied.status == 200
    assert (await wait_for_value(client, display_set["pk"], "ct-image"))["image"] == image

    # Into another item of the archive by its uploader, who views the image as an archive member.
    target = await create_item(client, user="reader2", title="target")
    into_item = await client.call(
        "PATCH",
        client.api(f"{ITEMS}{target['pk']}/"),
        user="reader2",
        json_body={"values": [{"interface": "generic-medical-image", "image": image}]},
    )
    assert into_item.status == 200
    assert [v["image"] for v in into_item.json()["values"]] == [image]


async def test_an_image_the_user_may_not_view_is_refused_as_a_missing_hyperlink(client, emulator, tmp_path):
    # The editor's image lives only in the archive; reader2 is made an editor of the study but is no longer in the
    # archive, so the image is out of reach.
    source = await create_item(client, title="source")
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha", (2, 4, 4)))
    await client.call(
        "PATCH",
        client.api(f"{ITEMS}{source['pk']}/"),
        json_body={"values": [{"interface": "ct-image", "user_uploads": [upload["api_url"]]}]},
    )
    image = (await wait_for_item_value(client, source["pk"], "ct-image"))["image"]
    store = emulator.context.store
    reader2 = store.user_by_username("reader2")
    example_archive(emulator).uploader_pks.discard(reader2.pk)
    study = store.reader_study_by_slug("example-study")
    study.editor_pks.add(reader2.pk)
    display_set = await create_display_set(client, user="reader2")
    refused = await client.call(
        "PATCH",
        client.api(f"reader-studies/display-sets/{display_set['pk']}/"),
        user="reader2",
        json_body={"values": [{"interface": "ct-image", "image": image}]},
    )
    assert (refused.status, refused.json()) == (
        400,
        {"values": [{"image": ["Invalid hyperlink - Object does not exist."]}]},
    )


async def test_images_are_listed_by_archive_and_an_unknown_archive_is_a_400(client, emulator, tmp_path):
    created = await create_item(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha", (2, 4, 4)))
    await client.call(
        "PATCH",
        client.api(f"{ITEMS}{created['pk']}/"),
        json_body={"values": [{"interface": "ct-image", "user_uploads": [upload["api_url"]]}]},
    )
    image = (await wait_for_item_value(client, created["pk"], "ct-image"))["image"]
    pk = example_archive(emulator).pk
    listed = await client.call("GET", client.api(f"cases/images/?archive={pk}"), user="reader1")
    unknown = "00000000-0000-0000-0000-000000000000"
    refused = await client.call("GET", client.api(f"cases/images/?archive={unknown}"))
    assert [i["api_url"] for i in listed.json()["results"]] == [image]
    assert (refused.status, refused.json()) == (
        400,
        {"archive": [f"Select a valid choice. {unknown} is not one of the available choices."]},
    )

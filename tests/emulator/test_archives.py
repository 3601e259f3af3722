"""Archives and archive items (docs/gc-api.md §12): the endpoints as the server serves them, the three roles, upload
sessions into an archive and into an item, and values naming an existing image with the ``view_image`` check.

The example seed's archive has ``editor`` as editor, ``reader2`` as uploader and ``reader1`` as user (viewer);
``outsider`` is no member.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from gcbulk.emulator.importer import add_images_to_archive
from gcbulk.emulator.seed import SeedError, apply_seed
from gcbulk.emulator.server import RunningEmulator
from gcbulk.emulator.store import Archive, Store
from tests.emulator.conftest import EmulatorClient
from tests.emulator.study_flow import create_display_set, upload_file, wait_for_session, wait_for_value
from tests.imaging import make_dicom_series, make_mha

ARCHIVE_SLUG = "example-archive"
ITEMS = "archives/items/"
INVALID_CHOICE = "Select a valid choice. That choice is not one of the available choices."


def example_archive(emulator: RunningEmulator) -> Archive:
    archive = emulator.context.store.archive_by_slug(ARCHIVE_SLUG)
    assert archive is not None
    return archive


def site(client: EmulatorClient) -> str:
    """The site root the web pages and media are under (the API is at ``api/v1/`` below it)."""
    return client.emulator.base_url.removesuffix("api/v1/")


async def archive_api_url(client: EmulatorClient) -> str:
    reply = await client.call("GET", client.api(f"archives/?slug={ARCHIVE_SLUG}"))
    return reply.json()["results"][0]["api_url"]


async def create_item(client: EmulatorClient, user: str = "editor", **body: Any) -> dict[str, Any]:
    reply = await client.call(
        "POST", client.api(ITEMS), user=user, json_body={"archive": await archive_api_url(client), **body}
    )
    assert reply.status == 201, reply.body
    return reply.json()


async def get_item(client: EmulatorClient, pk: str, user: str = "editor") -> dict[str, Any]:
    reply = await client.call("GET", client.api(f"{ITEMS}{pk}/"), user=user)
    assert reply.status == 200, reply.body
    return reply.json()


async def wait_for_item_value(client: EmulatorClient, pk: str, socket: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def has_value() -> bool:
        for value in (await get_item(client, pk))["values"]:
            if value["interface"]["slug"] == socket:
                found.update(value)
                return True
        return False

    await client.eventually(has_value, f"a value for {socket} in archive item {pk}")
    return found


# -- seed -----------------------------------------------------------------------------------------------------------


def test_a_seed_declares_archives_with_their_three_groups():
    store = Store()
    apply_seed(
        store,
        {
            "users": [{"username": name} for name in ("ed", "up", "us")],
            "archives": [{"slug": "ct", "editors": ["ed"], "uploaders": ["up"], "users": ["us"]}],
        },
    )
    archive = store.archive_by_slug("ct")
    ed, up, us = (store.user_by_username(name) for name in ("ed", "up", "us"))
    assert archive is not None and archive.title == "ct"
    assert [archive.can_upload(user) for user in (ed, up, us)] == [True, True, False]
    assert [archive.can_view(user) for user in (ed, up, us)] == [True, True, True]


@pytest.mark.parametrize(
    ("archives", "message"),
    [
        ([{"slug": "ct", "uploaders": ["nobody"]}], "archives[0].uploaders: no user 'nobody'; declare it under"),
        ([{"title": "CT"}], "archives[0]: missing 'slug'; add it to the seed file"),
        ([{"slug": "ct"}, {"slug": "ct"}], "archives[1]: archive slug 'ct' is declared twice"),
    ],
)
def test_a_seed_with_a_bad_archive_is_refused_naming_the_entry(archives, message):
    with pytest.raises(SeedError, match=re.escape(message)):
        apply_seed(Store(), {"archives": archives})


# -- archives ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["editor", "reader2", "reader1"])
async def test_every_member_finds_the_archive_by_slug_with_the_servers_fields(client, emulator, user):
    reply = await client.call("GET", client.api(f"archives/?slug={ARCHIVE_SLUG}"), user=user)
    listed = reply.json()
    archive = example_archive(emulator)
    assert reply.status == 200 and listed["count"] == 1
    assert listed["results"][0] == {
        "pk": archive.pk,
        "title": "Example CT archive",
        "logo": f"{site(client)}media/logos/archive/{archive.pk}/logo.png",
        "description": "CT scans to build reader studies from.",
        "api_url": client.api(f"archives/{archive.pk}/"),
        "url": f"{site(client)}archives/{ARCHIVE_SLUG}/",
    }
    detail = await client.call("GET", client.api(f"archives/{archive.pk}/"), user=user)
    assert (detail.status, detail.json()) == (200, listed["results"][0])


async def test_outsiders_see_no_archive_and_get_404_on_it(client, emulator):
    pk = example_archive(emulator).pk
    listed = await client.call("GET", client.api("archives/"), user="outsider")
    detail = await client.call("GET", client.api(f"archives/{pk}/"), user="outsider")
    assert listed.json()["count"] == 0
    assert (detail.status, detail.json()) == (404, {"detail": "No Archive matches the given query."})


async def test_an_unknown_slug_is_an_empty_list(client):
    reply = await client.call("GET", client.api("archives/?slug=no-such-archive"))
    assert (reply.status, reply.json()["count"]) == (200, 0)


# -- archive items: create, list, retrieve ----------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["editor", "reader2"])
async def test_editors_and_uploaders_create_items_with_the_post_shape(client, user):
    created = await create_item(client, user=user, title="case 1")
    assert set(created) == {
        "pk",
        "title",
        "archive",
        "values",
        "hanging_protocol",
        "optional_hanging_protocols",
        "view_content",
    }
    assert created["title"] == "case 1" and created["values"] == []
    assert created["archive"] == await archive_api_url(client)


@pytest.mark.parametrize("user", ["reader1", "outsider"])
async def test_viewers_and_outsiders_cannot_create_an_item_the_archive_does_not_exist_for_them(client, user):
    body = {"archive": await archive_api_url(client)}
    reply = await client.call("POST", client.api(ITEMS), user=user, json_body=body)
    assert (reply.status, reply.json()) == (400, {"archive": ["Invalid hyperlink - Object does not exist."]})


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (ARCHIVE_SLUG, "Invalid hyperlink - No URL match."),
        (3, "Incorrect type. Expected URL string, received int."),
    ],
)
async def test_the_archive_is_a_hyperlink_not_a_slug(client, archive, message):
    reply = await client.call("POST", client.api(ITEMS), json_body={"archive": archive})
    assert (reply.status, reply.json()) == (400, {"archive": [message]})


async def test_values_at_create_time_are_refused(client):
    body = {"archive": await archive_api_url(client), "values": [{"interface": "patient-age", "value": 3}]}
    reply = await client.call("POST", client.api(ITEMS), json_body=body)
    assert (reply.status, reply.json()) == (400, ["Values can only be added via update"])


async def test_non_empty_titles_are_unique_per_archive_empty_ones_are_not(client):
    first = await create_item(client, title="case 1")
    await create_item(client, title="")
    await create_item(client, title="")
    duplicate = await client.call(
        "POST", client.api(ITEMS), json_body={"archive": await archive_api_url(client), "title": "case 1"}
    )
    renamed = await client.call(
        "PATCH", client.api(f"{ITEMS}{(await create_item(client))['pk']}/"), json_body={"title": "case 1"}
    )
    unique = {"non_field_errors": ["The fields title, archive must make a unique set."]}
    assert (duplicate.status, duplicate.json()) == (400, unique)
    assert (renamed.status, renamed.json()) == (400, unique)
    same = await client.call("PATCH", client.api(f"{ITEMS}{first['pk']}/"), json_body={"title": "case 1"})
    assert same.status == 200


# A wide window between the title check and the insert, so both requests land in it however the loop schedules them.
@pytest.mark.parametrize("emulator_config", [{"create_round_trip_seconds": 0.5}], indirect=True)
async def test_a_concurrent_duplicate_title_can_answer_an_html_500_as_for_display_sets(client):
    body = {"archive": await archive_api_url(client), "title": "same"}
    replies = await asyncio.gather(*(client.call("POST", client.api(ITEMS), json_body=body) for _ in range(2)))
    assert sorted(reply.status for reply in replies) == [201, 500]
    failed = next(reply for reply in replies if reply.status == 500)
    assert failed.headers["Content-Type"].startswith("text/html") and b"Server Error (500)" in failed.body


async def test_items_are_listed_by_archive_pk_to_members_only(client, emulator):
    created = [await create_item(client, title=f"case {n}") for n in range(3)]
    pk = example_archive(emulator).pk
    for user in ("editor", "reader2", "reader1"):
        reply = await client.call("GET", client.api(f"{ITEMS}?archive={pk}"), user=user)
        assert [item["pk"] for item in reply.json()["results"]] == [item["pk"] for item in created]
    outsider = await client.call("GET", client.api(f"{ITEMS}?archive={pk}"), user="outsider")
    one = await client.call("GET", client.api(f"{ITEMS}{created[0]['pk']}/"), user="outsider")
    assert outsider.json()["count"] == 0
    assert (one.status, one.json()) == (404, {"detail": "No ArchiveItem matches the given query."})


async def test_filtering_items_by_slug_is_the_django_filter_400(client):
    reply = await client.call("GET", client.api(f"{ITEMS}?archive={ARCHIVE_SLUG}"))
    assert (reply.status, reply.json()) == (400, {"archive": [INVALID_CHOICE]})


async def test_delete_is_405(client):
    created = await create_item(client)
    reply = await client.call("DELETE", client.api(f"{ITEMS}{created['pk']}/"))
    assert (reply.status, reply.json()) == (405, {"detail": 'Method "DELETE" not allowed.'})


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


async def start_session(client: EmulatorClient, body: dict[str, Any], user: str = "editor") -> Any:
    return await client.call("POST", client.api("cases/upload-sessions/"), user=user, json_body=body)


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

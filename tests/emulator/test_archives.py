"""Archives and archive items (docs/gc-api.md §12): the seed, the endpoints as the server serves them (fields, filters,
error texts, title uniqueness) and the three roles (tests/emulator/archive_flow.py names them)."""

from __future__ import annotations

import asyncio
import re

import pytest

from gcbulk.emulator.seed import SeedError, apply_seed
from gcbulk.emulator.store import Store
from tests.emulator.archive_flow import (
    ARCHIVE_SLUG,
    ITEMS,
    archive_api_url,
    create_item,
    example_archive,
    site,
)

INVALID_CHOICE = "Select a valid choice. That choice is not one of the available choices."


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

"""Values checked as the server checks them (docs/gc-api.md §3, §10): every value kind against its JSON schema on the PATCH,
and JSON file sockets in the background, where a refusal leaves the value absent and only a notification says why."""

from __future__ import annotations

import json

import pytest

from gcbulk.emulator.store import Socket
from gcbulk.value_schemas import JSON_KIND_CODES
from tests.annotation_values import ROWS, Row
from tests.emulator.study_flow import create_display_set, get_display_set, patch_display_set, wait_for_value

MULTIPLE_POINTS_GOOD = next(r.value for r in ROWS if r.kind == "Multiple points" and r.accepted)
MULTIPLE_POINTS_BAD = next(r.value for r in ROWS if r.kind == "Multiple points" and not r.accepted)


def test_every_json_value_kind_has_rows_both_ways():
    kinds = {(row.kind, row.accepted) for row in ROWS}
    assert {kind for kind, _ in kinds} == set(JSON_KIND_CODES)
    assert {kind for kind, accepted in kinds if not accepted} == set(JSON_KIND_CODES) - {"Anything"}


def _add_socket(emulator, kind: str, super_kind: str) -> str:
    store = emulator.context.store
    slug = "kind-" + kind.lower().replace(" ", "-")
    store.sockets[slug] = Socket(
        pk=store.next_int_pk(),
        slug=slug,
        title=kind.title(),
        kind=kind,
        super_kind=super_kind,
        relative_path=f"{slug}.json",
    )
    return slug


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
async def test_a_value_of_every_kind_is_accepted_or_refused_as_the_server_does(client, emulator, row: Row):
    slug = _add_socket(emulator, row.kind, "Value")
    display_set = await create_display_set(client)
    reply = await patch_display_set(client, display_set["pk"], {"values": [{"interface": slug, "value": row.value}]})
    if row.accepted:
        assert reply.status == 200, reply.body
        return
    assert reply.status == 400
    (message,) = reply.json()["values"][0]["__all__"]
    assert message.startswith("JSON does not fulfill schema: instance")


async def test_a_bounding_box_on_the_seed_socket_is_refused_with_the_servers_error_shape(client):
    display_set = await create_display_set(client)
    reply = await patch_display_set(
        client,
        display_set["pk"],
        {"values": [{"interface": "2d-bounding-box", "value": {"type": "2D bounding box", "corners": []}}]},
    )
    assert reply.status == 400
    assert list(reply.json()) == ["values"] and list(reply.json()["values"][0]) == ["__all__"]


async def _set_json_file(client, display_set_pk: str, content: bytes) -> None:
    upload = await client.completed_upload(content, filename="nodule-points.json")
    reply = await patch_display_set(
        client, display_set_pk, {"values": [{"interface": "nodule-points", "user_upload": upload["api_url"]}]}
    )
    assert reply.status == 200 and reply.json()["values"] == []


async def test_a_valid_json_file_becomes_the_sockets_file_value(client):
    display_set = await create_display_set(client)
    content = json.dumps(MULTIPLE_POINTS_GOOD).encode()
    await _set_json_file(client, display_set["pk"], content)
    value = await wait_for_value(client, display_set["pk"], "nodule-points")
    assert value["file"]


@pytest.mark.parametrize("content", [json.dumps(MULTIPLE_POINTS_BAD).encode(), b"{not json"])
async def test_an_invalid_json_file_never_appears_and_only_a_notification_says_why(client, content):
    display_set = await create_display_set(client)
    await _set_json_file(client, display_set["pk"], content)
    found: list[dict] = []

    async def notified() -> bool:
        found[:] = (await client.call("GET", client.api("notifications/"))).json()["results"]
        return bool(found)

    await client.eventually(notified, "a notification about the refused file")
    assert found[0]["read"] is False
    assert found[0]["message"].startswith("Validation for socket Nodule Points failed: ")
    assert (await get_display_set(client, display_set["pk"]))["values"] == []
    others = (await client.call("GET", client.api("notifications/"), user="reader1")).json()
    assert others["count"] == 0

"""Values checked as the server checks them (docs/gc-api.md §3, §10): every value kind against its JSON schema on the PATCH,
and JSON file sockets in the background, where a refusal leaves the value absent and only a notification says why."""

from __future__ import annotations

import json

import pytest

from gcbulk.emulator.store import Socket
from gcbulk.emulator.value_schemas import KIND_SCHEMAS
from tests.emulator.study_flow import create_display_set, get_display_set, patch_display_set, wait_for_value

P = [1.0, 2.0, 0.0]
Q = [3.0, 4.0, 0.0]
R = [5.0, 1.0, 0.0]
V = {"major": 1, "minor": 0}
BOX = {"corners": [P, Q, R, P]}
LINE = {"seed_points": [P], "path_point_lists": [[P, Q]]}
POLYGON = {"name": "p", "seed_point": P, "path_points": [P, Q, R], "sub_type": "poly", "groups": [], "version": V}
ANGLE = {"lines": [[P, Q], [Q, R]]}
ELLIPSE = {"major_axis": [P, Q], "minor_axis": [Q, R]}

# One valid value of every kind, and one the server refuses.
CASES = {
    "String": ("text", 3),
    "Integer": (3, 3.5),
    "Float": (3.5, "3.5"),
    "Bool": (True, "yes"),
    "Anything": ({"any": ["thing"]}, None),
    "Choice": ("a", 1),
    "Multiple choice": (["a", "b"], "a"),
    "Chart": ({"mark": "bar", "data": {"values": []}}, {"data": {}}),
    "Affine transform registration": ({"3d_affine_transform": [[1, 0, 0, 0]] * 4}, {"3d_affine_transform": [[1]]}),
    "2D bounding box": (
        {"type": "2D bounding box", "version": V, **BOX},
        {"type": "2D bounding box", "version": V, "corners": [P, Q]},
    ),
    "Multiple 2D bounding boxes": (
        {"type": "Multiple 2D bounding boxes", "version": V, "boxes": [BOX]},
        {"type": "Multiple 2D bounding boxes", "version": V, "boxes": [{"corners": P}]},
    ),
    "Distance measurement": (
        {"type": "Distance measurement", "version": V, "start": P, "end": Q},
        {"type": "Distance measurement", "version": V, "start": P},
    ),
    "Multiple distance measurements": (
        {"type": "Multiple distance measurements", "version": V, "lines": [{"start": P, "end": Q}]},
        {"type": "Multiple distance measurements", "version": V, "lines": [{"start": P}]},
    ),
    "Point": ({"type": "Point", "version": V, "point": P}, {"type": "Point", "version": V, "point": [1, 2]}),
    "Multiple points": (
        {"type": "Multiple points", "version": V, "points": [{"point": P}]},
        {"type": "Multiple points", "version": V, "points": [P]},
    ),
    "Polygon": (POLYGON, {**POLYGON, "path_points": "none"}),
    "Multiple polygons": (
        {"type": "Multiple polygons", "version": V, "polygons": [POLYGON]},
        {"type": "Multiple polygons", "version": V, "polygons": [{"name": "p"}]},
    ),
    "Line": ({"type": "Line", "version": V, **LINE}, {"type": "Line", "version": V, "seed_points": [P]}),
    "Multiple lines": (
        {"type": "Multiple lines", "version": V, "lines": [LINE]},
        {"type": "Multiple lines", "version": V, "lines": [{}]},
    ),
    "Angle": ({"type": "Angle", "version": V, **ANGLE}, {"type": "Angle", "version": V, "lines": [[P, Q]]}),
    "Multiple angles": (
        {"type": "Multiple angles", "version": V, "angles": [ANGLE]},
        {"type": "Multiple angles", "version": V, "angles": [{"lines": []}]},
    ),
    "Ellipse": ({"type": "Ellipse", "version": V, **ELLIPSE}, {"type": "Ellipse", "version": V, "major_axis": [P]}),
    "Multiple ellipses": (
        {"type": "Multiple ellipses", "version": V, "ellipses": [ELLIPSE]},
        {"type": "Multiple ellipses", "version": V, "ellipses": [{"major_axis": [P, Q]}]},
    ),
    "Three-point angle": (
        {"type": "Three-point angle", "version": V, "angle": [P, Q, R]},
        {"type": "Three-point angle", "version": V, "angle": [P, Q]},
    ),
    "Multiple three-point angles": (
        {"type": "Multiple three-point angles", "version": V, "angles": [{"angle": [P, Q, R]}]},
        {"type": "Multiple three-point angles", "version": V, "angles": [{"angle": [P]}]},
    ),
}


def test_every_value_kind_has_a_schema_and_a_case_here():
    assert set(KIND_SCHEMAS) == set(CASES)


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


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_a_value_of_every_kind_is_checked_against_its_schema(client, emulator, kind):
    slug = _add_socket(emulator, kind, "Value")
    good, bad = CASES[kind]
    display_set = await create_display_set(client)
    accepted = await patch_display_set(client, display_set["pk"], {"values": [{"interface": slug, "value": good}]})
    assert accepted.status == 200, accepted.body
    if bad is None:  # "Anything" takes any JSON
        return
    refused = await patch_display_set(client, display_set["pk"], {"values": [{"interface": slug, "value": bad}]})
    assert refused.status == 400
    (message,) = refused.json()["values"][0]["__all__"]
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
    content = json.dumps(CASES["Multiple points"][0]).encode()
    await _set_json_file(client, display_set["pk"], content)
    value = await wait_for_value(client, display_set["pk"], "nodule-points")
    assert value["file"]


@pytest.mark.parametrize("content", [json.dumps(CASES["Multiple points"][1]).encode(), b"{not json"])
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

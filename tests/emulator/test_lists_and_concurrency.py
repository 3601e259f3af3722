"""Lists and concurrent writes as the real server serves them (docs/gc-api.md §10)."""

from __future__ import annotations

import asyncio

from tests.emulator.study_flow import create_display_set


async def _create(client, **body):
    return await client.call(
        "POST", client.api("reader-studies/display-sets/"), json_body={"reader_study": "example-study", **body}
    )


async def test_display_sets_created_one_at_a_time_get_orders_10_20_30(client):
    orders = [(await create_display_set(client))["order"] for _ in range(3)]
    assert orders == [10, 20, 30]


async def test_display_sets_created_concurrently_can_share_an_order(client):
    replies = await asyncio.gather(*(_create(client) for _ in range(20)))
    assert all(reply.status == 201 for reply in replies)
    orders = [reply.json()["order"] for reply in replies]
    assert len(set(orders)) < len(orders)


async def test_a_concurrent_duplicate_title_can_answer_an_html_500(client):
    replies = await asyncio.gather(*(_create(client, title="same") for _ in range(2)))
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [201, 500]
    failed = next(reply for reply in replies if reply.status == 500)
    assert failed.headers["Content-Type"].startswith("text/html") and b"Server Error (500)" in failed.body
    # One at a time, the duplicate is the ordinary 400.
    again = await _create(client, title="same")
    assert (again.status, again.json()) == (
        400,
        {"non_field_errors": ["The fields title, reader_study must make a unique set."]},
    )


async def test_uploads_and_sessions_are_listed_in_no_particular_order(client):
    created = [(await client.create_upload(f"f{n}.mha"))["pk"] for n in range(12)]
    listed = [u["pk"] for u in (await client.call("GET", client.api("uploads/"))).json()["results"]]
    assert sorted(listed) == sorted(created) and listed != created
    sessions = []
    for _ in range(12):
        reply = await client.call("POST", client.api("cases/upload-sessions/"), json_body={"uploads": []})
        sessions.append(reply.json()["pk"])
    listed = [s["pk"] for s in (await client.call("GET", client.api("cases/upload-sessions/"))).json()["results"]]
    assert sorted(listed) == sorted(sessions) and listed != sessions

"""docs/gc-api.md §0 / §7 conventions, checked on the uploads endpoints: what every Grand Challenge client relies on."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from gcbulk.emulator.store import UPLOAD_INITIALIZED, Upload, new_uuid


async def test_json_responses_carry_exactly_application_json(client):
    created = await client.call("POST", client.api("uploads/"), json_body={"filename": "ct.mha"})
    replies = [
        created,
        await client.call("GET", client.api("uploads/")),
        await client.call("GET", created.json()["api_url"]),
        await client.call("POST", client.api("uploads/"), json_body={"filename": "a/b"}),  # 400
        await client.call("GET", client.api(f"uploads/{new_uuid()}/")),  # 404
        await client.call("GET", client.api("gcapi/"), user=None),
    ]
    assert [reply.headers["Content-Type"] for reply in replies] == ["application/json"] * len(replies)


async def test_api_paths_need_the_trailing_slash_and_never_redirect(client):
    upload = await client.create_upload()
    for path in ("uploads", f"uploads/{upload['pk']}", f"uploads/{upload['pk']}/{upload['s3_upload_id']}/list-parts"):
        reply = await client.call("GET", client.api(path))
        assert reply.status == 404, path
        assert "Location" not in reply.headers
        assert reply.json() == {"detail": "Not found."}


async def test_api_url_and_next_are_absolute_on_the_host_and_port_the_client_used(client):
    for _ in range(3):
        await client.create_upload()
    # The certificate also names "localhost": a client that says localhost must get localhost back (docs/gc-api.md §8).
    for host in ("127.0.0.1", "localhost"):
        origin = client.emulator.base_url.replace("127.0.0.1", host).removesuffix("/api/v1/")
        page = (await client.call("GET", f"{origin}/api/v1/uploads/?limit=2")).json()
        assert page["count"] == 3
        assert all(item["api_url"].startswith(f"{origin}/api/v1/uploads/") for item in page["results"])
        assert page["next"].startswith(f"{origin}/api/v1/uploads/?")
        assert parse_qs(urlsplit(page["next"]).query) == {"limit": ["2"], "offset": ["2"]}
        last = (await client.call("GET", page["next"])).json()
        assert len(last["results"]) == 1 and last["next"] is None
        assert last["previous"].startswith(f"{origin}/api/v1/uploads/?")


async def test_version_endpoint_answers_without_a_token(client):
    reply = await client.call("GET", client.api("gcapi/"), user=None)
    assert reply.status == 200
    assert reply.json() == {"latest_version": "0.16.1", "lowest_supported_version": "0.13.0"}


async def test_pagination_defaults_to_100_and_clips_the_limit_at_1000(client, emulator):
    editor = emulator.context.store.user_by_username("editor")
    now = emulator.context.clock.now()
    for index in range(1005):
        pk = new_uuid()
        emulator.context.store.uploads[pk] = Upload(pk, editor, f"f{index}.mha", now, UPLOAD_INITIALIZED, "x")
    default = (await client.call("GET", client.api("uploads/"))).json()
    clipped = (await client.call("GET", client.api("uploads/?limit=5000"))).json()
    tail = (await client.call("GET", client.api("uploads/?limit=1000&offset=1000"))).json()
    assert (default["count"], len(default["results"])) == (1005, 100)
    assert len(clipped["results"]) == 1000
    assert parse_qs(urlsplit(clipped["next"]).query)["limit"] == ["1000"]
    assert len(tail["results"]) == 5 and tail["next"] is None


async def test_an_unknown_token_is_401_invalid_token(client):
    upload = await client.create_upload()
    for method, url in (("GET", client.api("uploads/")), ("GET", upload["api_url"]), ("POST", client.api("uploads/"))):
        reply = await client.call(method, url, token="not-a-token", json_body={"filename": "x.mha"})
        assert (reply.status, reply.json()) == (401, {"detail": "Invalid token."}), (method, url)


async def test_another_users_upload_is_404_and_absent_from_their_list(client):
    upload = await client.create_upload(user="editor")
    detail = await client.call("GET", upload["api_url"], user="reader1")
    listed = (await client.call("GET", client.api("uploads/"), user="reader1")).json()
    parts = await client.call("GET", client.action_url(upload, "list-parts"), user="reader1")
    abort = await client.call("PATCH", client.action_url(upload, "abort-multipart-upload"), user="reader1")
    assert (detail.status, detail.json()) == (404, {"detail": "No UserUpload matches the given query."})
    assert listed["count"] == 0 and listed["results"] == []
    assert parts.status == 404 and abort.status == 404


async def test_anonymous_reads_see_nothing_and_anonymous_writes_are_401(client):
    upload = await client.create_upload()
    listed = await client.call("GET", client.api("uploads/"), user=None)
    detail = await client.call("GET", upload["api_url"], user=None)
    create = await client.call("POST", client.api("uploads/"), user=None, json_body={"filename": "x.mha"})
    abort = await client.call("PATCH", client.action_url(upload, "abort-multipart-upload"), user=None)
    assert (listed.status, listed.json()["results"]) == (200, [])
    assert detail.status == 404
    not_authenticated = {"detail": "Authentication credentials were not provided."}
    assert (create.status, create.json()) == (401, not_authenticated)
    assert (abort.status, abort.json()) == (401, not_authenticated)


async def test_uploads_cannot_be_edited_405(client):
    # DELETE is a 403 (permissions are checked first, docs/gc-api.md §10): tests/emulator/test_session_tracking.py.
    upload = await client.create_upload()
    for method in ("PUT", "PATCH"):
        reply = await client.call(method, upload["api_url"], json_body={"filename": "y.mha"})
        assert reply.status == 405, method
        assert reply.json() == {"detail": f'Method "{method}" not allowed.'}
    still_there = await client.call("GET", upload["api_url"])
    assert still_there.status == 200

"""The UserUpload API of docs/gc-api.md §1: create, presign, list-parts, complete, abort, the state machine, the limits."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from gcbulk.emulator.http import ApiError
from gcbulk.emulator.uploads import (
    completed_upload_for,
    consume_upload,
    upload_object_path,
)

MIB = 1024**2
SMALL_QUOTA = 1000


# A tiny byte quota for the unverified "outsider" (docs/gc-api.md §1: 2 GiB in production) and a small upload cap.
pytestmark = pytest.mark.emulator(unverified_byte_quota=SMALL_QUOTA, max_uploads_per_user=3)


async def test_create_answers_201_with_an_initialized_upload(client, emulator):
    reply = await client.call("POST", client.api("uploads/"), json_body={"filename": "ct.mha"})
    upload = reply.json()
    editor = emulator.context.store.user_by_username("editor")
    assert reply.status == 201
    assert set(upload) == {"pk", "created", "filename", "key", "s3_upload_id", "status", "api_url"}
    assert upload["status"] == "Initialized" and upload["s3_upload_id"]
    assert upload["key"] == f"uploads/{editor.pk}/{upload['pk']}"
    assert upload["api_url"] == client.api(f"uploads/{upload['pk']}/")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", upload["created"])
    assert (await client.call("GET", upload["api_url"])).json() == upload


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"filename": ["This field is required."]}),
        ({"filename": ""}, {"filename": ["This field may not be blank."]}),
        ({"filename": None}, {"filename": ["This field may not be null."]}),
        ({"filename": "x" * 129}, {"filename": ["Ensure this field has no more than 128 characters."]}),
        ({"filename": "../../ct.mha"}, {"filename": ["../../ct.mha is not a valid filename"]}),
        ({"filename": "scans/ct.mha"}, {"filename": ["scans/ct.mha is not a valid filename"]}),
    ],
)
async def test_create_rejects_a_missing_long_or_non_bare_filename(client, body, errors):
    reply = await client.call("POST", client.api("uploads/"), json_body=body)
    assert (reply.status, reply.json()) == (400, errors)


async def test_a_128_character_filename_is_accepted(client):
    upload = await client.create_upload("x" * 124 + ".mha")
    assert len(upload["filename"]) == 128


async def test_creating_beyond_the_upload_cap_is_400_non_field_errors(client):
    # docs/gc-api.md §1: refused once the user holds more than the cap (3 here, 2000 in production).
    for _ in range(4):
        await client.create_upload()
    refused = await client.call("POST", client.api("uploads/"), json_body={"filename": "ct.mha"})
    other_user = await client.call("POST", client.api("uploads/"), user="reader1", json_body={"filename": "ct.mha"})
    assert (refused.status, refused.json()) == (
        400,
        {"non_field_errors": ["You have created too many uploads. Please try again later."]},
    )
    assert other_user.status == 201


async def test_presign_signs_any_subset_of_part_numbers_under_string_keys(client, emulator):
    upload = await client.create_upload()
    reply = await client.call(
        "PATCH", client.action_url(upload, "generate-presigned-urls"), json_body={"part_numbers": [35, 42, 128, 10000]}
    )
    body = reply.json()
    assert reply.status == 200
    assert body["pk"] == upload["pk"] and body["status"] == "Initialized"
    assert set(body["presigned_urls"]) == {"35", "42", "128", "10000"}
    for number, url in body["presigned_urls"].items():
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        assert f"{parts.scheme}://{parts.netloc}" == emulator.s3_url
        assert parts.path == f"/uploads/{upload['key']}"
        assert query["uploadId"] == [upload["s3_upload_id"]] and query["partNumber"] == [number]
        assert {"X-Amz-Expires", "X-Amz-Signature"} <= set(query)
        expires = int(query["X-Amz-Expires"][0])
        # boto3's default expiry, as the server passes none (docs/gc-api.md §1).
        assert abs(expires - (emulator.context.clock.timestamp() + 3600)) < 60


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"non_field_errors": ["The `part_numbers` field is required"]}),
        ({"part_numbers": 3}, {"part_numbers": ['Expected a list of items but got type "int".']}),
        (
            {"part_numbers": [0, 2, 10001, "x"]},
            {
                "part_numbers": {
                    "0": ["Ensure this value is greater than or equal to 1."],
                    "2": ["Ensure this value is less than or equal to 10000."],
                    "3": ["A valid integer is required."],
                }
            },
        ),
    ],
)
async def test_presign_rejects_bad_part_numbers(client, body, errors):
    upload = await client.create_upload()
    reply = await client.call("PATCH", client.action_url(upload, "generate-presigned-urls"), json_body=body)
    assert (reply.status, reply.json()) == (400, errors)


async def test_presign_beyond_the_byte_quota_is_403_upload_limit_reached(client):
    upload = await client.create_upload(user="outsider")
    url = (await client.presign(upload, [1], user="outsider"))["1"]
    assert (await client.put(url, b"x" * SMALL_QUOTA)).status == 200
    reply = await client.call(
        "PATCH", client.action_url(upload, "generate-presigned-urls"), user="outsider", json_body={"part_numbers": [2]}
    )
    assert (reply.status, reply.json()) == (403, {"detail": "Upload limit reached"})


async def test_completed_objects_still_in_the_bucket_count_against_the_quota(client, emulator):
    done = await client.completed_upload(b"x" * SMALL_QUOTA, user="outsider")
    fresh = await client.create_upload(user="outsider")
    presign = client.action_url(fresh, "generate-presigned-urls")
    refused = await client.call("PATCH", presign, user="outsider", json_body={"part_numbers": [1]})
    consume_upload(emulator.context, emulator.context.store.uploads[done["pk"]])
    allowed = await client.call("PATCH", presign, user="outsider", json_body={"part_numbers": [1]})
    assert refused.status == 403 and allowed.status == 200


async def test_presign_on_a_completed_upload_is_403_upload_limit_reached(client):
    upload = await client.completed_upload(b"data")
    reply = await client.call(
        "PATCH", client.action_url(upload, "generate-presigned-urls"), json_body={"part_numbers": [2]}
    )
    assert (reply.status, reply.json()) == (403, {"detail": "Upload limit reached"})


async def test_list_parts_lists_every_part_in_order_with_quoted_etag_and_size(client):
    upload = await client.create_upload()
    etags = {number: await client.put_part(upload, number, bytes([number]) * (number * 10)) for number in (3, 1, 2)}
    parts = await client.list_parts(upload)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(n, etags[n], n * 10) for n in (1, 2, 3)]
    assert all(re.fullmatch(r'"[0-9a-f]{32}"', p["ETag"]) for p in parts)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", p["LastModified"]) for p in parts)


async def test_complete_assembles_the_object_from_the_listed_parts(client, emulator):
    upload = await client.create_upload()
    first, second = b"a" * (5 * MIB), b"tail"
    etag1 = await client.put_part(upload, 1, first)
    etag2 = await client.put_part(upload, 2, second)
    reply = await client.complete(upload, [(1, etag1), (2, etag2.strip('"'))])  # S3 also takes unquoted ETags
    assert reply.status == 200
    assert reply.json()["status"] == "Completed"
    assert reply.json()["s3_upload_id"] == upload["s3_upload_id"]
    stored = emulator.context.store.uploads[upload["pk"]]
    assert upload_object_path(emulator.context, stored).read_bytes() == first + second


async def test_complete_needs_the_parts_key(client):
    upload = await client.create_upload()
    reply = await client.call("PATCH", client.action_url(upload, "complete-multipart-upload"), json_body={})
    assert (reply.status, reply.json()) == (400, {"non_field_errors": ["The `parts` field is required"]})


async def test_complete_reports_bad_part_fields_per_part(client):
    upload = await client.create_upload()
    body = {"parts": [{"ETag": '"a"', "PartNumber": 1}, {"ETag": "", "PartNumber": 0}]}
    reply = await client.call("PATCH", client.action_url(upload, "complete-multipart-upload"), json_body=body)
    assert (reply.status, reply.json()) == (
        400,
        {
            "parts": [
                {},
                {
                    "ETag": ["This field may not be blank."],
                    "PartNumber": ["Ensure this value is greater than or equal to 1."],
                },
            ]
        },
    )


@pytest.mark.parametrize("extra", [{"Size": 4}, {"LastModified": "2025-11-14T10:00:00.000Z"}])
async def test_complete_with_list_parts_entries_passed_verbatim_is_a_500(client, extra):
    # The serializer keeps Size/LastModified and hands them to boto3, whose parameter check refuses them.
    upload = await client.create_upload()
    etag = await client.put_part(upload, 1, b"data")
    body = {"parts": [{"ETag": etag, "PartNumber": 1, **extra}]}
    reply = await client.call("PATCH", client.action_url(upload, "complete-multipart-upload"), json_body=body)
    assert reply.status == 500
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "ParamValidationError" in reply.headers["X-Emulator-Error"]


async def test_abort_blanks_the_upload_id_and_later_calls_with_the_old_id_are_404(client, emulator):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    assert (await client.put(url, b"data")).status == 200
    reply = await client.abort(upload)
    assert reply.status == 200
    assert (reply.json()["status"], reply.json()["s3_upload_id"]) == ("Aborted", "")
    assert not emulator.context.objects.multipart_dir(upload["s3_upload_id"]).exists()
    for method, action in (
        ("GET", "list-parts"),
        ("PATCH", "complete-multipart-upload"),
        ("PATCH", "abort-multipart-upload"),
        ("PATCH", "generate-presigned-urls"),
    ):
        again = await client.call(method, client.action_url(upload, action), json_body={"parts": []})
        assert (again.status, again.json()) == (404, {"detail": "Not found."}), action
    after_abort = await client.put(url, b"data")
    assert after_abort.status == 404 and b"<Code>NoSuchUpload</Code>" in after_abort.body


@pytest.mark.parametrize(
    ("method", "action"),
    [
        ("GET", "list-parts"),
        ("PATCH", "generate-presigned-urls"),
        ("PATCH", "complete-multipart-upload"),
        ("PATCH", "abort-multipart-upload"),
    ],
)
async def test_an_s3_upload_id_that_does_not_match_is_404(client, method, action):
    upload = await client.create_upload()
    url = client.action_url(upload, action, s3_upload_id="1" + upload["s3_upload_id"])
    reply = await client.call(method, url, json_body={"part_numbers": [1], "parts": []})
    assert (reply.status, reply.json()) == (404, {"detail": "Not found."})


@pytest.mark.parametrize(
    ("method", "action"),
    [("GET", "list-parts"), ("PATCH", "complete-multipart-upload"), ("PATCH", "abort-multipart-upload")],
)
async def test_actions_on_a_completed_upload_are_non_json_500s(client, method, action):
    upload = await client.completed_upload(b"data")
    reply = await client.call(
        method, client.action_url(upload, action), json_body={"parts": [{"ETag": "x", "PartNumber": 1}]}
    )
    assert reply.status == 500
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<h1>Server Error (500)</h1>" in reply.text
    assert reply.headers["X-Emulator-Error"] == "RuntimeError: Upload is not initialized"
    assert (await client.call("GET", upload["api_url"])).json()["status"] == "Completed"


async def test_completed_upload_for_accepts_only_the_users_own_completed_uploads(client, emulator):
    context = emulator.context
    editor = context.store.user_by_username("editor")
    done = await client.completed_upload(b"data")
    open_upload = await client.create_upload()
    foreign = await client.completed_upload(b"data", user="reader1")
    assert completed_upload_for(context, editor, done["api_url"]).pk == done["pk"]
    unknown = client.api("uploads/00000000-0000-0000-0000-000000000000/")
    for url in (open_upload["api_url"], foreign["api_url"], unknown):
        with pytest.raises(ApiError) as raised:
            completed_upload_for(context, editor, url)
        assert (raised.value.status, raised.value.body) == (
            400,
            {"uploads": ["Invalid hyperlink - Object does not exist."]},
        )
    with pytest.raises(ApiError) as not_a_link:
        completed_upload_for(context, editor, "https://example.org/elsewhere/", field="user_upload")
    with pytest.raises(ApiError) as not_a_string:
        completed_upload_for(context, editor, 42)
    assert not_a_link.value.body == {"user_upload": ["Invalid hyperlink - No URL match."]}
    assert not_a_string.value.body == {"uploads": ["Incorrect type. Expected URL string, received int."]}


async def test_consuming_an_upload_deletes_its_row_and_object(client, emulator):
    context = emulator.context
    done = await client.completed_upload(b"data")
    upload = context.store.uploads[done["pk"]]
    path = upload_object_path(context, upload)
    assert path.read_bytes() == b"data"
    consume_upload(context, upload)
    assert not path.exists()
    assert (await client.call("GET", done["api_url"])).status == 404

"""The S3 site: presigned part PUTs (docs/gc-api.md §1), S3's rules at complete, and signed object GETs with Range."""

from __future__ import annotations

import asyncio
import hashlib
import re
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from gcbulk.emulator.objects import IMAGES_BUCKET
from gcbulk.emulator.s3 import presigned_get_url

MIB = 1024**2


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_a_part_put_answers_200_with_the_quoted_md5_as_etag(client):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    data = b"some image bytes"
    reply = await client.put(url, data)
    assert reply.status == 200
    assert reply.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'


async def test_a_re_put_replaces_the_part(client):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    await client.put(url, b"first version")
    second = await client.put(url, b"second")
    parts = await client.list_parts(upload)
    assert [(p["ETag"], p["Size"]) for p in parts] == [(second.headers["ETag"], 6)]


async def test_the_authorization_header_is_ignored_on_part_puts(client):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    reply = await client.put(url, b"data", headers={"Authorization": "Bearer whatever"})
    assert reply.status == 200


async def test_a_part_put_after_the_url_expired_is_403(client, emulator):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    emulator.context.clock.advance(3601)
    reply = await client.put(url, b"data")
    assert reply.status == 403
    assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in reply.body
    fresh = (await client.presign(upload, [1]))["1"]  # re-presigning is the cure (docs/gc-api.md §1)
    assert (await client.put(fresh, b"data")).status == 200


@pytest.mark.parametrize(
    "tamper",
    [
        {"partNumber": "2"},
        {"X-Amz-Expires": "9999999999"},
        {"X-Amz-Signature": "0" * 64},
    ],
)
async def test_a_tampered_part_url_is_403_signature_does_not_match(client, tamper):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    reply = await client.put(_with_query(url, **tamper), b"data")
    assert reply.status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in reply.body
    assert reply.headers["Content-Type"] == "application/xml"


async def test_an_unsigned_part_put_is_403(client, emulator):
    upload = await client.create_upload()
    url = f"{emulator.s3_url}/uploads/{upload['key']}?uploadId={upload['s3_upload_id']}&partNumber=1"
    reply = await client.put(url, b"data")
    assert reply.status == 403 and b"<Code>AccessDenied</Code>" in reply.body


async def test_a_part_put_without_content_length_is_411(client):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]

    async def chunked():
        yield b"data"

    async with client.session.put(url, data=chunked(), ssl=client.ssl_context) as response:
        assert response.status == 411
        assert b"<Code>MissingContentLength</Code>" in await response.read()


async def test_an_interrupted_re_put_keeps_the_stored_part(client, emulator):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    kept = (await client.put(url, b"k" * 1000)).headers["ETag"]
    target = urlsplit(url)
    reader, writer = await asyncio.open_connection(target.hostname, target.port, ssl=client.ssl_context)
    writer.write(
        f"PUT {target.path}?{target.query} HTTP/1.1\r\nHost: {target.netloc}\r\nContent-Length: 100000\r\n\r\n".encode()
        + b"z" * 5000
    )
    await writer.drain()
    writer.close()
    folder = emulator.context.objects.multipart_dir(upload["s3_upload_id"])

    async def partial_file_removed() -> bool:
        return not list(folder.glob("*.partial"))

    await client.eventually(partial_file_removed, "the half-received part to be discarded")
    parts = await client.list_parts(upload)
    assert [(p["ETag"], p["Size"]) for p in parts] == [(kept, 1000)]


async def test_part_puts_to_an_unknown_multipart_upload_are_404_no_such_upload(client, emulator):
    upload = await client.create_upload()
    url = (await client.presign(upload, [1]))["1"]
    emulator.context.objects.abort_multipart(upload["s3_upload_id"])
    reply = await client.put(url, b"data")
    assert reply.status == 404
    assert b"<Code>NoSuchUpload</Code>" in reply.body


async def _parts(client, upload, sizes: dict[int, int]) -> dict[int, str]:
    urls = await client.presign(upload, sorted(sizes))
    return {n: (await client.put(urls[str(n)], bytes([n]) * size)).headers["ETag"] for n, size in sizes.items()}


def _s3_code(reply) -> str:
    match = re.search(
        r"An error occurred \((\w+)\) when calling the CompleteMultipartUpload",
        reply.headers.get("X-Emulator-Error", ""),
    )
    return match.group(1) if match else ""


@pytest.mark.parametrize(
    ("name", "chosen", "code"),
    [
        ("parts out of order", [2, 1], "InvalidPartOrder"),
        ("a part number twice", [1, 1], "InvalidPartOrder"),
        ("a part never uploaded", [1, 4], "InvalidPart"),
        ("a wrong ETag", [1, "wrong-etag-for-2"], "InvalidPart"),
        ("a small part that is not the last", [1, 2, 3], "EntityTooSmall"),
        ("no parts", [], "MalformedXML"),
    ],
)
async def test_complete_breaking_s3s_rules_is_a_500_and_the_upload_stays_open(client, name, chosen, code):
    upload = await client.create_upload()
    etags = await _parts(client, upload, {1: 5 * MIB, 2: 10, 3: 5 * MIB})
    listed = []
    for item in chosen:
        if item == "wrong-etag-for-2":
            listed.append((2, '"' + "0" * 32 + '"'))
        else:
            listed.append((item, etags.get(item, '"' + "f" * 32 + '"')))
    reply = await client.complete(upload, listed)
    assert reply.status == 500, name
    assert reply.headers["Content-Type"].startswith("text/html")
    assert _s3_code(reply) == code
    assert (await client.call("GET", upload["api_url"])).json()["status"] == "Initialized"
    assert (await client.complete(upload, [(1, etags[1]), (3, etags[3])])).status == 200


async def test_a_small_last_part_and_a_single_small_part_are_allowed(client):
    upload = await client.create_upload()
    etags = await _parts(client, upload, {1: 5 * MIB, 2: 1})
    assert (await client.complete(upload, [(1, etags[1]), (2, etags[2])])).status == 200
    single = await client.create_upload()
    etag = (await _parts(client, single, {7: 3}))[7]
    assert (await client.complete(single, [(7, etag)])).status == 200


async def test_only_the_listed_parts_make_the_object(client, emulator):
    upload = await client.create_upload()
    etags = await _parts(client, upload, {1: 5 * MIB, 2: 5 * MIB, 3: 7})
    assert (await client.complete(upload, [(1, etags[1]), (3, etags[3])])).status == 200
    stored = emulator.context.objects.object_path("uploads", upload["key"]).read_bytes()
    assert stored == bytes([1]) * (5 * MIB) + bytes([3]) * 7


async def test_counters_count_stored_part_puts_per_upload_and_part(client):
    upload = await client.create_upload()
    urls = await client.presign(upload, [1, 2])
    await client.put(urls["1"], b"one")
    await client.put(urls["1"], b"one again")
    await client.put(urls["2"], b"two")
    counters = (await client.call("GET", client.admin("counters"))).json()
    assert counters["part_puts"] == {upload["pk"]: {"1": 2, "2": 1}}
    assert counters["requests"]["PUT s3:/{bucket}/{key}"] == 3
    assert list(counters["peak_uploads_per_user"].values()) == [1], "the most uploads the user held at once"
    assert counters["requests"]["PATCH api:/api/v1/uploads/{pk}/{s3_upload_id}/generate-presigned-urls/"] == 1
    reset = (await client.call("DELETE", client.admin("counters"))).json()
    assert reset == {
        "requests": {},
        "part_puts": {},
        "part_put_attempts": {},
        "busy_seconds": {},
        "import_busy_seconds": 0.0,
        "api_latency_ratio": None,
        "peak_uploads_per_user": {},
        "peak_api_serving": 0,
    }


@pytest.fixture
def image_object(emulator) -> tuple[str, bytes]:
    data = bytes(range(256)) * 40
    key = "images/ab/cd/some-image/some-file/ct.mha"
    path = emulator.context.objects.object_path(IMAGES_BUCKET, key)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return key, data


async def test_a_signed_get_serves_the_object(client, emulator, image_object):
    key, data = image_object
    reply = await client.call("GET", presigned_get_url(emulator.context, IMAGES_BUCKET, key), user=None)
    assert reply.status == 200
    assert reply.body == data
    assert reply.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=100-", 100, 10240),
        ("bytes=-50", 10190, 10240),
        ("bytes=10000-99999", 10000, 10240),
    ],
)
async def test_a_signed_get_honours_a_range(client, emulator, image_object, header, start, stop):
    key, data = image_object
    url = presigned_get_url(emulator.context, IMAGES_BUCKET, key)
    reply = await client.call("GET", url, user=None, headers={"Range": header})
    assert reply.status == 206
    assert reply.body == data[start:stop]
    assert reply.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(data)}"


async def test_an_unsatisfiable_range_is_416(client, emulator, image_object):
    key, data = image_object
    url = presigned_get_url(emulator.context, IMAGES_BUCKET, key)
    reply = await client.call("GET", url, user=None, headers={"Range": f"bytes={len(data)}-"})
    assert reply.status == 416
    assert reply.headers["Content-Range"] == f"bytes */{len(data)}"
    assert b"<Code>InvalidRange</Code>" in reply.body


async def test_a_signed_get_expires_after_the_download_expiry(client, emulator, image_object):
    key, _ = image_object
    url = presigned_get_url(emulator.context, IMAGES_BUCKET, key)
    emulator.context.clock.advance(301)  # docs/gc-api.md §4: download URLs live 300 s
    reply = await client.call("GET", url, user=None)
    assert reply.status == 403 and b"Request has expired" in reply.body


async def test_an_unsigned_or_missing_object_get_is_refused(client, emulator, image_object):
    key, _ = image_object
    unsigned = await client.call("GET", f"{emulator.s3_url}/{IMAGES_BUCKET}/{key}", user=None)
    missing = await client.call("GET", presigned_get_url(emulator.context, IMAGES_BUCKET, key + ".nope"), user=None)
    assert unsigned.status == 403
    assert missing.status == 404 and b"<Code>NoSuchKey</Code>" in missing.body

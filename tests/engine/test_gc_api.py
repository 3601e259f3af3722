"""The Grand Challenge client against the emulator: endpoints, typed errors, adoption by title, the token's safety."""

from __future__ import annotations

import hashlib
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient, display_set_title
from gcbulk.engine.gc.display_set_create import TitleTaken
from gcbulk.engine.gc.errors import (
    AuthenticationFailed,
    ConfigurationError,
    MultipartUploadVanished,
    PresignedUrlExpired,
    UnsafeUrlError,
)
from gcbulk.engine.gc.uploads_api import UploadRef
from gcbulk.engine.upload.s3_parts import PartSpec, PresignedUrls, md5_of_etag, put_part, upload_part
from tests.engine.conftest import FAST_RETRIES

MIB = 1024 * 1024


async def test_client_repr_and_errors_never_show_the_token(emulator: RunningEmulator) -> None:
    async with GrandChallengeClient(
        base_url=emulator.base_url,
        token="Bearer not-a-real-token-123",
        ca_file=emulator.ca_file,
        retry_policy=FAST_RETRIES,
    ) as gc:
        assert "not-a-real-token-123" not in repr(gc)
        with pytest.raises(AuthenticationFailed) as caught:
            await gc.reader_study_by_slug("example-study")
    assert caught.value.status == 401
    assert "not-a-real-token-123" not in str(caught.value) and "not-a-real-token-123" not in repr(caught.value)


async def test_the_token_is_never_sent_to_another_host(client: GrandChallengeClient) -> None:
    with pytest.raises(UnsafeUrlError, match="refusing to send the API token"):
        await client.request("GET", "https://evil.example/api/v1/uploads/")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "reader-studies",
                "display-sets",
                "a1b2-c3",
                "..",
                ".",
                "",
                "?x=1",
                "#f",
                "//evil.example",
                "https:",
                "evil.example",
                "~u",
                "_",
                "%2e%2e",
                "x y",
                "é",
            ]
        ),
        max_size=5,
    ),
    st.booleans(),
)
def test_every_path_the_client_is_given_joins_the_base_url_as_urljoin_does(segments: list[str], slash: bool) -> None:
    """The token goes only where urljoin's answer points: the shortcut for plain paths must never give another."""
    client = GrandChallengeClient(base_url="https://grand-challenge.org/api/v1/", token="url-join-test-token-7f3a9c")
    path = "/".join(segments) + ("/" if slash else "")
    expected = urljoin(client.base_url, path)
    if urlsplit(expected).netloc == "grand-challenge.org" and urlsplit(expected).scheme == "https":
        assert client.url_for(path) == expected
    else:
        with pytest.raises(UnsafeUrlError):
            client.url_for(path)


def test_base_url_must_be_https_and_end_in_a_slash() -> None:
    with pytest.raises(ConfigurationError, match="must use https"):
        GrandChallengeClient(base_url="http://grand-challenge.org/api/v1/", token="t")
    with pytest.raises(ConfigurationError, match="must end in '/'"):
        GrandChallengeClient(base_url="https://grand-challenge.org/api/v1", token="t")
    with pytest.raises(ConfigurationError, match="token is empty"):
        GrandChallengeClient(base_url="https://grand-challenge.org/api/v1/", token="  ")


async def test_reader_study_and_sockets_are_found_by_slug(client: GrandChallengeClient) -> None:
    study = await client.reader_study_by_slug("example-study")
    assert study["slug"] == "example-study" and study["pk"]
    socket = await client.get_socket("ct-image")
    assert socket is not None and socket["slug"] == "ct-image"
    assert await client.get_socket("no-such-socket") is None


async def test_an_unknown_reader_study_is_a_configuration_error(client: GrandChallengeClient) -> None:
    with pytest.raises(ConfigurationError, match="'nope' was not found"):
        await client.reader_study_by_slug("nope")


async def test_a_second_create_with_one_title_is_refused_naming_the_display_set_that_holds_it(
    client: GrandChallengeClient,
) -> None:
    first = await client.create_display_set("example-study", "patient-1")
    with pytest.raises(TitleTaken, match=f"'patient-1' is pk {first['pk']}, not this create's: the server refused"):
        await client.create_display_set("example-study", "patient-1")
    study = await client.reader_study_by_slug("example-study")
    found = await client.find_display_set_by_title(study["pk"], "patient-1")
    assert found is not None and found["pk"] == first["pk"] and display_set_title(found) == "patient-1"
    assert await client.find_display_set_by_title(study["pk"], "patient-2") is None


async def test_iterate_all_reads_every_page(client: GrandChallengeClient) -> None:
    for n in range(7):
        await client.create_display_set("example-study", f"case {n}")
    study = await client.reader_study_by_slug("example-study")
    titles = [
        display_set_title(ds)
        async for ds in client.iterate_all("reader-studies/display-sets/", {"reader_study": study["pk"]}, page_size=3)
    ]
    assert sorted(titles) == sorted(f"case {n}" for n in range(7))


async def test_a_multipart_upload_round_trip(client: GrandChallengeClient) -> None:
    data = [bytes([n]) * (5 * MIB) for n in (1, 2)] + [b"tail"]
    upload = await client.create_upload("ct.mha")
    assert upload["status"] == "Initialized"
    urls = await client.generate_presigned_urls(upload, [1, 2, 3])
    assert sorted(urls) == [1, 2, 3]
    sent: list[int] = []
    parts = []
    for number, chunk in enumerate(data, start=1):
        etag = await put_part(client.session, urls[number], chunk, progress=sent.append)
        assert etag.startswith('"') and etag.endswith('"')
        parts.append({"PartNumber": number, "ETag": etag})
    assert sum(sent) == sum(len(c) for c in data)
    listed = await client.list_parts(upload)
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 * MIB), (2, 5 * MIB), (3, 4)]
    done = await client.complete_multipart_upload(upload, reversed(parts))
    assert done["status"] == "Completed"
    # A complete retried after its answer was lost meets the server's 500 trap; the client sees it already happened.
    again = await client.complete_multipart_upload(upload, parts)
    assert again["status"] == "Completed"


async def test_an_aborted_upload_is_reported_as_vanished(client: GrandChallengeClient) -> None:
    upload = await client.create_upload("ct.mha")
    await client.abort_multipart_upload(upload)
    with pytest.raises(MultipartUploadVanished):
        await client.generate_presigned_urls(upload, [1])
    with pytest.raises(MultipartUploadVanished):
        await client.list_parts(upload)


async def test_an_expired_presigned_url_is_refused_and_signed_again(
    client: GrandChallengeClient, emulator: RunningEmulator
) -> None:
    upload = UploadRef.of(await client.create_upload("ct.mha"))
    data = b"x" * 1000
    md5 = hashlib.md5(data).hexdigest()
    urls = PresignedUrls(client.generate_presigned_urls, upload, [1, 2], batch_size=5)
    stale = await urls.url_for(1)  # presigns parts 1 and 2 in one batch
    emulator.context.clock.advance(3601)  # docs/gc-api.md §1: presigned URLs live 3600 s
    with pytest.raises(PresignedUrlExpired):
        await put_part(client.session, stale, data, progress=lambda n: None)
    progress: list[int] = []
    retries: list[object] = []
    etag = await upload_part(
        client.session,
        urls,
        PartSpec(2, 0, len(data)),
        data,
        policy=FAST_RETRIES,
        progress=progress.append,
        on_retry=lambda *a: retries.append(a),
    )
    assert etag == f'"{md5}"'
    assert sum(progress) == len(data) and len(retries) == 1


async def test_a_part_put_answers_with_the_md5_of_the_bytes_s3_stored(client: GrandChallengeClient) -> None:
    upload = await client.create_upload("ct.mha")
    url = (await client.generate_presigned_urls(upload, [1]))[1]
    etag = await put_part(client.session, url, b"abc", progress=lambda n: None)
    assert md5_of_etag(etag) == hashlib.md5(b"abc").hexdigest()  # what file_upload.py composes into the checksum


async def test_iterate_all_pages_by_offset_when_the_server_sends_no_next() -> None:
    """A list without ``next`` links (as gcapi assumes, docs/gc-api.md §0) is read page by page until an empty page."""
    from aiohttp import web

    items = [{"pk": n} for n in range(5)]
    seen_offsets: list[int] = []

    async def listing(request: web.Request) -> web.Response:
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        seen_offsets.append(offset)
        return web.json_response({"count": len(items), "results": items[offset : offset + limit]})

    app = web.Application()
    app.router.add_get("/api/v1/things/", listing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with GrandChallengeClient(
            base_url=f"http://127.0.0.1:{port}/api/v1/", token="t", retry_policy=FAST_RETRIES
        ) as gc:
            got = [item["pk"] async for item in gc.iterate_all("things/", page_size=2)]
    finally:
        await runner.cleanup()
    assert got == [0, 1, 2, 3, 4] and seen_offsets == [0, 2, 4, 5]


async def test_a_reader_who_may_not_add_display_sets_gets_a_configuration_error(emulator: RunningEmulator) -> None:
    async with GrandChallengeClient(
        base_url=emulator.base_url,
        token=emulator.tokens["reader1"],
        ca_file=emulator.ca_file,
        retry_policy=FAST_RETRIES,
    ) as reader:
        with pytest.raises(ConfigurationError, match="make the user an editor of the study"):
            await reader.create_display_set("example-study", "patient-1")

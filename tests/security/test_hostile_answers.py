"""What a hostile or broken server gets back from gcbulk: one clear error and bounded resources (issue 14)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from gcbulk.emulator.tls import generate_tls_files
from gcbulk.engine.cli.guard import EXIT_BROKEN_PIPE, run_guarded
from gcbulk.engine.gc.bounded import trust_context
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import (
    ConfigurationError,
    Disposition,
    ResponseTooLarge,
    TlsVerificationFailed,
    UnexpectedResponse,
    UnsafeUrlError,
    classify,
)
from gcbulk.engine.gc.retry import RetryPolicy
from gcbulk.exit_codes import EXIT_CRASH

TOKEN = "hostile-test-token-0123456789abcdef"
NO_RETRIES = RetryPolicy(attempts_per_item=1)


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"results": [')
    while True:  # the client must stop reading; the server never does
        await response.write(b'{"pk": "x"},' * 4096)


async def a_list(request: web.Request) -> web.Response:
    return web.json_response([{"pk": "1"}])


async def html(request: web.Request) -> web.Response:
    return web.Response(text="<html>login</html>", content_type="text/html")


async def to_file(request: web.Request) -> web.Response:
    raise web.HTTPFound("file:///etc/passwd")


async def lying_length(request: web.Request) -> web.Response:
    return web.Response(body=b"{}", headers={"Content-Type": "application/json", "Content-Length": "999999999999"})


@pytest.fixture
async def hostile_api() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/api/v1/endless/", endless)
    app.router.add_get("/api/v1/list/", a_list)
    app.router.add_get("/api/v1/html/", html)
    app.router.add_get("/api/v1/lying/", lying_length)
    app.router.add_get("/media/images/file.mha", to_file)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/api/v1/"
    finally:
        await runner.cleanup()


def client(base_url: str, **options: object) -> GrandChallengeClient:
    return GrandChallengeClient(base_url=base_url, token=TOKEN, retry_policy=NO_RETRIES, **options)  # type: ignore[arg-type]


async def test_an_endless_api_answer_stops_at_the_size_cap(hostile_api: str) -> None:
    with anyio.fail_after(30):
        async with client(hostile_api, max_response_bytes=1024 * 1024) as gc:
            with pytest.raises(ResponseTooLarge, match="longer than the 1048576 bytes"):
                await gc.request("GET", "endless/")


async def test_a_lying_content_length_beyond_the_cap_is_refused_before_reading(hostile_api: str) -> None:
    with anyio.fail_after(30):
        async with client(hostile_api) as gc:
            with pytest.raises(ResponseTooLarge, match="announces 999999999999 bytes"):
                await gc.request("GET", "lying/")


async def test_a_list_or_html_where_an_object_belongs_is_one_clear_error(hostile_api: str) -> None:
    with anyio.fail_after(30):
        async with client(hostile_api) as gc:
            with pytest.raises(UnexpectedResponse, match="with a list where a JSON object was expected"):
                await gc.request("GET", "list/")
            with pytest.raises(UnexpectedResponse, match="text/html text"):
                await gc.request("GET", "html/")


async def test_a_file_redirect_to_a_file_url_is_refused(hostile_api: str) -> None:
    with anyio.fail_after(30):
        async with client(hostile_api) as gc:
            with pytest.raises(UnsafeUrlError, match="goes to file: URL"):
                await gc.resolve_image_file(hostile_api.replace("/api/v1/", "/media/images/file.mha"))


def test_signed_downloads_over_plain_http_are_refused_unless_the_api_is_on_this_machine() -> None:
    public = GrandChallengeClient(base_url="https://gc.example/api/v1/", token=TOKEN)
    with pytest.raises(UnsafeUrlError, match="only https object-store URLs"):
        public._checked_redirect("https://gc.example/media/x", "http://bucket.example/x?sig=1")
    assert (
        public._checked_redirect("https://gc.example/media/x", "https://b.example/x?s=1") == "https://b.example/x?s=1"
    )
    local = GrandChallengeClient(base_url="http://127.0.0.1:9/api/v1/", token=TOKEN)
    assert local._checked_redirect("http://127.0.0.1:9/media/x", "http://127.0.0.1:8/x") == "http://127.0.0.1:8/x"
    for scheme in ("ftp://h/x", "data:text/plain,hi", "gopher://h/"):
        with pytest.raises(UnsafeUrlError):
            public._checked_redirect("https://gc.example/media/x", scheme)


def test_a_ca_file_that_is_not_a_certificate_is_a_clear_configuration_error(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("this is not a certificate\n")
    with pytest.raises(ConfigurationError, match="is not a PEM file of CA certificates.*GCBULK_CA_FILE"):
        GrandChallengeClient(base_url="https://gc.example/api/v1/", token=TOKEN, ca_file=bogus)


def test_the_ca_file_is_added_to_the_system_trust_store_not_put_in_its_place(tmp_path: Path) -> None:
    system = trust_context(None).cert_store_stats()["x509_ca"]
    ca = generate_tls_files(tmp_path).ca_file  # the emulator's own private CA
    assert trust_context(ca).cert_store_stats()["x509_ca"] == system + 1


def test_a_ca_file_replaced_between_clients_is_read_again_and_an_unchanged_one_is_not(tmp_path: Path) -> None:
    first = generate_tls_files(tmp_path / "first").ca_file
    assert trust_context(first) is trust_context(first), "one context per CA file as it is"
    ca = tmp_path / "ca.pem"
    ca.write_bytes(first.read_bytes())
    before = trust_context(ca)
    ca.write_bytes(b"this is not a certificate\n")  # replaced in place, as an operator would
    with pytest.raises(ConfigurationError, match="is not a PEM file of CA certificates"):
        trust_context(ca)
    ca.write_bytes(generate_tls_files(tmp_path / "second").ca_file.read_bytes())
    os.utime(ca, ns=(1, 1))  # another mtime too, whatever the clock's resolution
    after = trust_context(ca)
    assert after is not before and after.cert_store_stats()["x509_ca"] == before.cert_store_stats()["x509_ca"]
    ca.unlink()
    with pytest.raises(ConfigurationError, match="does not exist"):
        trust_context(ca)


async def test_a_certificate_that_does_not_verify_is_a_configuration_error_naming_ca_file(emulator) -> None:
    with anyio.fail_after(30):
        async with GrandChallengeClient(base_url=emulator.base_url, token=TOKEN, retry_policy=NO_RETRIES) as gc:
            with pytest.raises(TlsVerificationFailed, match="set ca_file .*GCBULK_CA_FILE") as caught:
                await gc.request("GET", "gcapi/")
    assert classify(caught.value) is Disposition.STOP_RUN


def test_output_piped_into_a_reader_that_went_away_exits_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    def handler() -> int:
        raise BrokenPipeError(32, "Broken pipe")

    assert run_guarded("status", handler) == EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


def test_an_exception_group_becomes_one_line_and_an_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    def handler() -> int:
        raise ExceptionGroup(
            "unhandled errors in a TaskGroup", [AttributeError("'list' object has no attribute 'get'"), ValueError("x")]
        )

    assert run_guarded("export", handler) == EXIT_CRASH  # not a server fault gcbulk knows: a bug, its own code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gcbulk export: internal error (AttributeError")

    def config_handler() -> int:
        raise ExceptionGroup("g", [ConfigurationError(f"bad thing Bearer {TOKEN}")])

    assert run_guarded("run", config_handler) == 2
    assert TOKEN not in capsys.readouterr().err

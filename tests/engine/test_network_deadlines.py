"""Every wait on the network has an overall deadline and a voice (issue 24): a server that answers one byte a second
does not hold a request (or `plan`) silently for ever; a presigned part URL on plain http is refused before a byte of
the user's images goes to it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc import deadlines
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import ConfigurationError, GcbulkError
from gcbulk.engine.gc.retry import RetryPolicy
from gcbulk.engine.upload.s3_parts import put_part
from tests.engine.conftest import FAST_ENGINE, make_tutorial_tree, run_job, write_job

BOUND = 30  # seconds: a test that would have hung fails here instead
ONCE = RetryPolicy(attempts_per_item=1, base_delay=0.01, max_delay=0.01)


@contextlib.asynccontextmanager
async def dripping_server() -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 that answers every request with headers at once, then its body a byte a second."""

    handlers: set[asyncio.Task] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            await writer.drain()
            while True:
                await asyncio.sleep(1)
                writer.write(b" ")
                await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in handlers:  # a client that gave up may have left its connection open: end the drip
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def test_an_api_answer_at_one_byte_a_second_ends_at_its_deadline_and_says_what_it_waits_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gcbulk.engine.gc")
    async with dripping_server() as origin:
        async with GrandChallengeClient(
            base_url=f"{origin}/api/v1/", token="t0k", retry_policy=ONCE, request_deadline=2.0, voice_after=0.5
        ) as client:
            with anyio.fail_after(BOUND), pytest.raises(GcbulkError) as raised:
                await client.request("GET", "components/interfaces/", params={"slug": "ct-image"})
    assert "no whole answer to GET /api/v1/components/interfaces/ within its deadline of 2 s" in str(raised.value)
    voice = "still waiting for GET /api/v1/components/interfaces/: no whole answer after"
    assert voice in caplog.text and "(gives up after 2 s)" in caplog.text
    assert "t0k" not in caplog.text


async def test_a_part_put_to_a_stalled_object_store_ends_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadlines, "API_DEADLINE_SECONDS", 1.0)  # a 1 KiB part: 1 s plus its bytes at 64 KiB/s
    sent: list[int] = []
    async with dripping_server() as origin:
        async with GrandChallengeClient(base_url=f"{origin}/api/v1/", token="t0k") as client:
            with anyio.fail_after(BOUND), pytest.raises(GcbulkError, match="within its deadline of 1.0156"):
                await put_part(client.session, f"{origin}/uploads/1?partNumber=1", b"x" * 1024, progress=sent.append)
    assert sum(sent) == 0  # the bytes counted as sent are taken back: the part is not stored


async def test_a_presigned_part_url_on_plain_http_stops_the_run_before_any_part_is_sent(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    emulator.context.s3_base_url = emulator.context.s3_base_url.replace("https://", "http://")

    with anyio.fail_after(BOUND), pytest.raises(ConfigurationError) as raised:
        await run_job(write_job(tmp_path, emulator), emulator, dataclasses.replace(FAST_ENGINE))

    assert "the server gave a part upload URL on http scheme" in str(raised.value)
    assert "gcbulk sends images over https only (plain http only when base_url is http)" in str(raised.value)
    assert "X-Amz" not in str(raised.value)  # the signature stays out of the message
    assert not emulator.context.counters.part_puts


def test_gcbulk_plan_against_a_dripping_server_says_what_it_waits_for(tmp_path: Path) -> None:
    """The real command in its own process: within seconds its stderr names the request it is waiting on (it would
    give up at the deadline and retry; the test stops it once it has spoken)."""
    import os
    import subprocess
    import sys
    import threading

    from tests.planner.conftest import write_job

    make_tutorial_tree(tmp_path / "cases", 1)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    origin: list[str] = []

    stop = asyncio.Event()

    async def serve() -> None:
        async with dripping_server() as url:
            origin.append(url)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(BOUND)
    job = write_job(tmp_path, base_url=f"{origin[0]}/api/v1/")
    env = {**os.environ, "GRAND_CHALLENGE_AUTHORIZATION": "t0k-secret"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gcbulk", "plan", str(job), "--dry-run"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        killer = threading.Timer(BOUND, process.kill)  # bound: a silent plan fails the test instead of hanging it
        killer.start()
        line = process.stderr.readline() if process.stderr else ""
        killer.cancel()
    finally:
        process.kill()
        process.wait(timeout=BOUND)
        loop.call_soon_threadsafe(stop.set)
        thread.join(BOUND)
    assert "still waiting for GET /api/v1/" in line and "no whole answer after 10 s (gives up after 120 s)" in line
    assert "t0k-secret" not in line

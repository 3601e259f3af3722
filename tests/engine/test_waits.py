"""No wait without a deadline or a voice: a case waiting for room under a server limit is woken by every release,
says what it waits for, reads the server's count again where the server holds the truth, and gives up with a reason
that names the limit."""

from __future__ import annotations

import logging

import anyio
import pytest

from gcbulk.engine.upload.server_limits import CountingGate, GateTimeout


async def test_a_release_from_a_cleanup_path_wakes_the_waiting_case() -> None:
    # Contract §2: a failed case frees its import slots from a path that cannot await; before, the next case then
    # waited forever.
    gate = CountingGate(1, held=1, name="imports in flight")
    got = anyio.Event()

    async def next_case() -> None:
        await gate.acquire(1)
        got.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(next_case)
            await anyio.sleep(0.01)
            gate.release_nowait(1)
            await got.wait()
    assert gate.held == 1


async def test_a_case_needing_more_than_the_limit_is_admitted_alone_not_left_waiting_for_itself() -> None:
    gate = CountingGate(1, name="imports in flight")  # imports_in_flight = 1 and a two-image case
    with anyio.fail_after(5):
        assert await gate.acquire(2, for_what="patient1") == 1


async def test_a_long_wait_says_what_it_waits_for(caplog: pytest.LogCaptureFixture) -> None:
    gate = CountingGate(2, held=2, name="imports in flight", why="each image value is one import on the server",
                        voice_after=0.05, voice_every=10)
    caplog.set_level(logging.INFO)

    async def waiter() -> None:
        await gate.acquire(1, for_what="patient7")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            while not any("waiting" in r.getMessage() for r in caplog.records):
                await anyio.sleep(0.02)
            gate.release_nowait(1)
    (line,) = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert "for 1 of imports in flight (patient7): 2 of 2 in use; each image value is one import" in line


async def test_waiting_for_live_uploads_reads_the_servers_count_again() -> None:
    # 1 990 uploads on the account at the start; the server's sweep or another tool frees them meanwhile.
    counts = iter([1990, 1500])
    gate = CountingGate(1800, held=1990, name="live uploads", voice_after=0.05, voice_every=0.05,
                        refresh=lambda: _const(next(counts)))
    with anyio.fail_after(5):
        assert await gate.acquire(1) == 1
    assert gate.held == 1501


async def test_a_wait_past_its_deadline_fails_the_case_naming_the_limit_and_who_holds_it() -> None:
    gate = CountingGate(1800, held=1995, name="live uploads", why="the account's uploads count",
                        deadline=0.1, voice_after=0.02, refresh=lambda: _const(1995))
    with anyio.fail_after(5), pytest.raises(GateTimeout, match=r"patient3: no room under the limit of live uploads"):
        await gate.acquire(1, for_what="patient3")
    assert gate.waiting == 0


async def _const(value: int) -> int:
    return value

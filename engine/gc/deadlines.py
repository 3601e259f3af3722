"""Overall deadlines for the waits on the network, and a voice while one lasts.

aiohttp's ``sock_read`` bounds the gap between two reads, not a request: a server (or proxy) that sends one byte a
second keeps a request alive for ever under it, silently. So every API request has an overall deadline that covers
connecting, sending and reading the whole body, and an S3 part PUT one that grows with the part's size; a request
still waiting after a few seconds says what it waits for, and again every half minute, at WARNING (what ``plan``
and ``run`` print when nothing else is configured).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

logger = logging.getLogger("gcbulk.engine.gc")

# One API request, answer included. The longest the real server was seen to take is a 1000-row list page, ~5 s
# (docs/gc-api.md §10); two minutes leaves room for a loaded server without letting a stalled one hold a run.
API_DEADLINE_SECONDS = 120.0
CONNECT_SECONDS = 30.0
# A part PUT may take as long as its bytes need at this slow but working rate, plus the API deadline's margin.
SLOWEST_USEFUL_RATE = 64 * 1024  # bytes per second
VOICE_AFTER_SECONDS = 10.0
VOICE_EVERY_SECONDS = 30.0


def api_timeout(deadline: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=deadline, sock_connect=min(CONNECT_SECONDS, deadline))


def part_deadline(size: int) -> float:
    """Seconds one PUT of ``size`` bytes may take in all."""
    return API_DEADLINE_SECONDS + size / SLOWEST_USEFUL_RATE


def part_timeout(size: int) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=part_deadline(size), sock_connect=CONNECT_SECONDS)


class DeadlinePassed(TimeoutError):
    """A request had no whole answer within its deadline (a network error: retried like any other)."""

    def __init__(self, what: str, deadline: float) -> None:
        super().__init__(f"no whole answer to {what} within its deadline of {deadline:g} s")


@contextmanager
def voiced(what: str, deadline: float, *, after: float = VOICE_AFTER_SECONDS) -> Iterator[None]:
    """Logs "still waiting for <what>" ``after`` seconds into the block, then every half minute, until it ends.
    ``what`` must hold no secret (no token, no signed query). A timer on the running loop, not a task: a request
    that is answered quickly (nearly all) costs one timer handle."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    handle: asyncio.TimerHandle | None = None

    def speak() -> None:
        nonlocal handle
        waited = time.monotonic() - started
        logger.warning(
            "still waiting for %s: no whole answer after %.0f s (gives up after %g s)", what, waited, deadline
        )
        handle = loop.call_later(VOICE_EVERY_SECONDS, speak)

    handle = loop.call_later(after, speak)
    try:
        yield
    finally:
        handle.cancel()

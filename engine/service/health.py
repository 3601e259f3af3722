"""``/metrics``, ``/healthz``, ``/readyz`` (and ``/status``, the live migration report) on the run's own event loop (``engine/service/metrics.py`` says why that loop).

* ``/healthz`` (liveness): the process is up and its event loop answers. A container runtime restarts on failure, so
  it does not depend on Grand Challenge: an outage there must not restart a run that is waiting it out.
* ``/readyz`` (readiness): the ledger takes a write transaction and Grand Challenge answers ``GET gcapi/`` (no token
  needed, docs/gc-api.md §0). The remote check is cached for a few seconds, so frequent probes do not load the server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gcbulk.engine.service.metrics import CONTENT_TYPE, Metrics, RunState
from gcbulk.engine.service.status_page import StatusPage
from gcbulk.engine.settings import Address

log = logging.getLogger(__name__)

READINESS_CACHE_SECONDS = 10.0
PROBE_TIMEOUT_SECONDS = 5.0
LEDGER_TIMEOUT_SECONDS = 5.0

Probe = Callable[[], Awaitable[None]]  # raises when Grand Challenge cannot be reached


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    checked_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "checked_at": round(self.checked_at, 3)}


def _try_write(ledger: Any) -> tuple[bool, str]:
    """On the ledger's thread: can it take a write lock? (A full disk or a read-only volume says no here.)"""
    if ledger.readonly:
        return False, "opened read-only"
    conn = ledger.db.conn
    if conn.in_transaction:  # a step is being recorded right now: writable by definition
        return True, "writing"
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return False, f"cannot write {ledger.path}: {exc}"
    return True, str(ledger.path)


async def ledger_check(state: RunState) -> Check:
    """The ledger can take a write: a run that cannot record a step must not send it."""
    runner = state.runner
    if runner is None or not runner.is_open:
        return Check(False, f"not open yet ({state.phase})", time.time())
    try:
        ok, detail = await asyncio.wait_for(runner.with_ledger(_try_write), LEDGER_TIMEOUT_SECONDS)
    except TimeoutError:
        ok, detail = False, f"the ledger's thread is busy for more than {LEDGER_TIMEOUT_SECONDS:.0f} s ({state.phase})"
    return Check(ok, detail, time.time())


class ServerCheck:
    """Whether Grand Challenge answers, probed at most every ``cache_seconds``; concurrent callers share a probe."""

    def __init__(self, probe: Probe | None, cache_seconds: float = READINESS_CACHE_SECONDS) -> None:
        self.probe = probe
        self.cache_seconds = cache_seconds
        self._last: Check | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> Check:
        async with self._lock:
            if self._last is not None and time.time() - self._last.checked_at < self.cache_seconds:
                return self._last
            if self.probe is None:
                self._last = Check(False, "no client yet", time.time())
                return self._last
            try:
                await asyncio.wait_for(self.probe(), PROBE_TIMEOUT_SECONDS)
                self._last = Check(True, "GET gcapi/ answered", time.time())
            except Exception as exc:  # any failure means "not reachable"; the detail says which
                self._last = Check(False, f"{type(exc).__name__}: {exc}"[:300], time.time())
            return self._last


class MonitoringServer:
    """An aiohttp site serving the three endpoints; ``start()`` returns the bound address (port 0 picks one)."""

    def __init__(
        self,
        metrics: Metrics,
        state: RunState,
        address: Address,
        server_check: ServerCheck,
        *,
        status_page: StatusPage | None = None,
    ) -> None:
        self.metrics = metrics
        self.status_page = status_page  # the live migration report at /status (engine/service/status_page.py)
        self.state = state
        self.address = address
        self.server_check = server_check
        self._runner: web.AppRunner | None = None
        self._started = time.monotonic()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/readyz", self.handle_readyz)
        if self.status_page is not None:
            app.router.add_get("/status", self.status_page.handle)
        return app

    async def start(self) -> Address:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        # Our own socket, so the port the kernel picked for port 0 is known (tests, several runs on one host).
        family = socket.AF_INET6 if ":" in self.address.host else socket.AF_INET
        sock = socket.create_server((self.address.host, self.address.port), family=family)
        await web.SockSite(self._runner, sock).start()
        self.address = Address(self.address.host, sock.getsockname()[1])
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.status_page is not None:
            await self.status_page.close()

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.metrics.scrape(), headers={"Content-Type": CONTENT_TYPE})

    async def handle_healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "phase": self.state.phase, "uptime_seconds": round(time.monotonic() - self._started, 3)}
        )

    async def handle_readyz(self, request: web.Request) -> web.Response:
        checks = {"ledger": await ledger_check(self.state), "grand_challenge": await self.server_check.check()}
        ready = all(check.ok for check in checks.values())
        body = {
            "ready": ready,
            "phase": self.state.phase,
            "checks": {name: check.as_dict() for name, check in checks.items()},
        }
        return web.json_response(body, status=200 if ready else 503)

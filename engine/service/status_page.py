"""``/status``: the migration report (``engine/service/report_html.py``), live, on the follow-mode server beside
``/metrics`` — refreshing itself, with what the run is doing and waiting for now.

The page reads the ledger through its own read-only connection on its own thread, not through the run's ledger
thread: drawing 100 000 cases takes about 4 s, and the run's every step waits in that thread's queue. The picture
is kept for ``refresh_seconds`` (10 s, or five times what the last read took), and concurrent requests share one
read, so a page left open in ten browser tabs costs one read per refresh interval. The event file is read once,
then only what was appended.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import anyio
from aiohttp import web

from gcbulk.engine.service.metrics import RunState
from gcbulk.engine.service.report_events import EventFacts, EventScanner
from gcbulk.engine.service.report_format import gcbulk_version
from gcbulk.engine.service.report_html import LiveNow, render_page
from gcbulk.state.ledger import Ledger, LedgerError
from gcbulk.state.report_aggregates import LedgerPicture, ledger_picture

REFRESH_SECONDS = 10
READ_TIMEOUT_SECONDS = 30.0


@dataclass
class _Cached:
    picture: LedgerPicture
    facts: EventFacts
    read_at: float


class StatusPage:
    """The ``/status`` handler. ``ledger_path`` and ``events_path`` are the run's; ``redact`` follows
    ``cases.redact_titles``."""

    def __init__(
        self,
        state: RunState,
        *,
        ledger_path: Path | str,
        events_path: Path | None,
        redact: bool,
        refresh_seconds: int = REFRESH_SECONDS,
    ) -> None:
        self.state = state
        self.ledger_path = ledger_path
        self.redact = redact
        self.base_refresh_seconds = refresh_seconds
        self.refresh_seconds = refresh_seconds  # grows with the time a read takes (see _read)
        self._events = EventScanner(events_path)
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()
        # One thread owns the page's read-only connection (sqlite3 connections are bound to their thread), kept
        # open between refreshes: opening runs SQLite's quick_check, seconds for a large ledger.
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcbulk-status")
        self._ledger: Ledger | None = None
        self._closed = False

    def _read_picture(self) -> LedgerPicture:
        """On the reader thread: the picture, through the connection opened at the first request."""
        if self._ledger is None:
            self._ledger = Ledger.open_readonly(self.ledger_path)
        try:
            return ledger_picture(self._ledger)
        except Exception:  # a damaged or replaced file: open it afresh next time
            self._ledger.close()
            self._ledger = None
            raise

    def _close_reader(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    async def close(self) -> None:
        """Closes the page's connection and its thread (the monitoring server calls it when it stops)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._reader, self._close_reader)
        self._reader.shutdown(wait=True)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            cached = await asyncio.wait_for(self._read(), READ_TIMEOUT_SECONDS)
        except (LedgerError, TimeoutError) as exc:
            reason = str(exc) or f"the ledger did not answer within {READ_TIMEOUT_SECONDS:.0f} s"
            return web.Response(text=self._waiting_page(reason), content_type="text/html", status=503)
        page = render_page(
            cached.picture,
            cached.facts,
            redact=self.redact,
            generated_at=datetime.now(UTC),
            version=gcbulk_version(),
            live=self._now(),
        )
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _read(self) -> _Cached:
        async with self._lock:  # concurrent requests share one read
            cached = self._cached
            if cached is not None and time.monotonic() - cached.read_at < self.refresh_seconds:
                return cached
            began = time.monotonic()
            picture = await asyncio.get_running_loop().run_in_executor(self._reader, self._read_picture)
            facts = await anyio.to_thread.run_sync(self._events.scan)
            self._cached = _Cached(picture, facts, time.monotonic())
            # A large job's picture takes seconds (about 4 s at 100 000 cases): the page then refreshes less often,
            # so an open page never costs the machine more than a fifth of a core.
            took = self._cached.read_at - began
            self.refresh_seconds = max(self.base_refresh_seconds, math.ceil(5 * took))
            return self._cached

    def _now(self) -> LiveNow:
        state = self.state
        snap = state.stats.snapshot() if state.stats is not None else None
        transferring = state.engine is not None
        files, parts = state.in_flight()
        return LiveNow(
            phase=state.phase,
            worker_id=state.worker_id,
            bytes_per_second=snap.bytes_per_second if snap and transferring else 0.0,
            eta_seconds=snap.eta_seconds if snap and transferring else None,
            files_in_flight=files,
            parts_in_flight=parts,
            waits=tuple(self._waits()),
            refresh_seconds=self.refresh_seconds,
        )

    def _waits(self) -> list[str]:
        """Why the run waits now: the server's recent waits, and an API-call limit the pacer has lowered while
        requests queue behind it (engine/gc/pacer.py lowers it when the server answers slowly)."""
        state = self.state
        waits = state.waits.current() if state.waits is not None else []
        client = getattr(state.engine, "client", None)
        limiter = getattr(client, "api_limiter", None)
        if limiter is not None and limiter.waiting > 0 and limiter.limit < limiter.policy.maximum:
            waits.append(f"server slow: limit {limiter.limit} in flight ({limiter.waiting} API calls queued)")
        if state.phase == "idle":
            waits.append("new cases: the run is idle until the next poll of the case folder")
        return waits

    def _waiting_page(self, reason: str) -> str:
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" '
            f'content="{self.refresh_seconds}"><title>gcbulk: starting</title></head><body>'
            f"<h1>gcbulk is {escape(self.state.phase)}</h1><p>The migration report is not ready: {escape(reason)}</p>"
            f"<p>This page tries again every {self.refresh_seconds} s.</p></body></html>"
        )

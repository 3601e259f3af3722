"""Server limits shared by every worker of a job (several workers on a PostgreSQL ledger, issue 13).

* ``SharedGate`` is a ``CountingGate`` whose units also count in the ledger (``gcbulk.state.workers``): units are
  first taken from this worker's own gate (its waits, voice, deadline and stop behave as before), then reserved in
  the ledger, where the sum over live workers, plus what the server counts that no worker holds, must fit the
  server's ceiling. A release is local at once (a cancelled task's cleanup cannot await the database) and reaches
  the ledger at the next reservation or heartbeat: until then the ledger counts too much, never too little.
* The adaptive limits (API calls, imports) stay per worker, each bounded by its knob: every worker backs off on the
  latency, 429s and 503s it sees (independent AIMD flows on one bottleneck settle on a fair share of it, as TCP's
  do), so a server with room — a remote site's latency — lets N workers send N times as much, and a server at its
  capacity makes them all back off. What they share through the ledger is the unloaded latency each endpoint has
  (``with_shared_floors``); the hard limits (live uploads, imports in flight) are ``SharedGate``s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import anyio

from gcbulk.engine.gc.errors import Interrupted
from gcbulk.engine.gc.pacer import AdaptiveLimiter, PacerState
from gcbulk.engine.upload.journal import Journal
from gcbulk.engine.upload.server_limits import VOICE_SECONDS, CountingGate, GateWaitTimeout, ImportPacer

wait_log = logging.getLogger("gcbulk.waits")

POLL_SECONDS = 0.2  # how often a waiting reservation asks again (a local query: cheap)


class SharedGate:
    """The ``CountingGate`` surface the upload path uses, with the units counted across the job's workers."""

    def __init__(
        self,
        local: CountingGate,
        journal: Journal,
        *,
        worker_id: str,
        lease_seconds: float,
        recount: Callable[[], Awaitable[int]] | None = None,
        wait_timeout: float | None = None,
    ) -> None:
        self.local = local
        self.journal = journal
        self.worker_id = worker_id
        # The server's, for the whole job, as the local gate starts with it; local.ceiling may later drop (adaptive).
        self.shared_ceiling = local.ceiling
        self.lease_seconds = lease_seconds
        self._recount = recount
        self._wait_timeout = wait_timeout
        # Units admitted (reserved in the ledger) and not released yet; units taken locally and still waiting for
        # the ledger are not in it, so a wait never asks the ledger for room it holds itself.
        self._reserved = 0
        self._recorded = 0  # this worker's units as the ledger holds them (>= _reserved until the next sync)
        self._ledger_turn = anyio.Lock()  # one reservation at a time: each one's target includes the one before

    # The CountingGate surface (engine/upload/case_upload.py, file_upload.py, import_wait.py, metrics).
    @property
    def name(self) -> str:
        return self.local.name

    @property
    def ceiling(self) -> int:
        return self.local.ceiling

    @property
    def held(self) -> int:
        return self.local.held

    @property
    def waiting(self) -> int:
        return self.local.waiting

    def set_ceiling(self, ceiling: int) -> None:
        self.local.set_ceiling(ceiling)

    def stop(self) -> None:
        self.local.stop()

    def release_nowait(self, units: int = 1) -> None:
        self.local.release_nowait(units)
        self._reserved = max(self._reserved - units, 0)

    async def release(self, units: int = 1) -> None:
        self.release_nowait(units)
        await self.sync()

    async def acquire(self, units: int = 1, *, who: str = "") -> int:
        taken = await self.local.acquire(units, who=who)
        started = last_voice = time.monotonic()
        try:
            while not await self._admit(taken):
                now = time.monotonic()
                if self.local.stopped:
                    raise Interrupted(f"{who or self.name}: stopped while waiting for {self.name}")
                if self._wait_timeout is not None and now - started >= self._wait_timeout:
                    raise GateWaitTimeout(
                        f"{who or 'waiting'}: no room for {units} under the {self.name} limit of "
                        f"{self.shared_ceiling} shared by this job's workers after {now - started:.0f} s"
                    )
                if now - last_voice >= VOICE_SECONDS:
                    last_voice = now
                    await self._voice(who, units, now - started)
                await anyio.sleep(POLL_SECONDS)
        except BaseException:
            self.local.release_nowait(taken)
            raise
        return taken

    async def _admit(self, units: int) -> bool:
        async with self._ledger_turn:
            if not await self._record(self._reserved + units):
                return False
            self._reserved += units
            return True

    async def sync(self) -> None:
        """Brings the ledger down to this worker's admitted units after releases (a lower count always fits)."""
        if self._reserved < self._recorded:
            with anyio.CancelScope(shield=True):
                async with self._ledger_turn:
                    await self._record(self._reserved)

    async def _record(self, target: int) -> bool:
        if target == self._recorded:
            return True
        if await self.journal.runner.run(
            self.journal.ledger.reserve_units,
            self.worker_id,
            self.name,
            held=target,
            ceiling=self.shared_ceiling,
            lease_seconds=self.lease_seconds,
        ):
            self._recorded = target
            return True
        return False

    async def set_external(self, server_count: int) -> int:
        """The server's own count (docs/gc-api.md §1: the cap counts every upload of the account): what no live worker
        holds is counted against the ceiling too."""
        return await self.journal.runner.run(
            self.journal.ledger.set_external_units,
            self.worker_id,
            self.name,
            server_count=server_count,
            lease_seconds=self.lease_seconds,
        )

    async def _voice(self, who: str, units: int, waited: float) -> None:
        if self._recount is not None:
            await self.set_external(await self._recount())
        units_by_worker = await self.journal.read(
            self.journal.ledger.shared_units, self.name, lease_seconds=self.lease_seconds
        )
        wait_log.info(
            "%s waits %.0f s so far for %d of %s, shared by this job's workers (limit %d; held: %s)",
            who or "a case",
            waited,
            units,
            self.name,
            self.shared_ceiling,
            ", ".join(f"{worker} {n}" for worker, n in units_by_worker.items()),
        )


def with_shared_floors(state: PacerState, floors_of_others: Sequence[Mapping[str, float]]) -> PacerState:
    """``state`` with each endpoint's latency floor lowered to the lowest another live worker measured in its
    current window. Why: a worker that starts while the server is already loaded by the others measures queueing as
    its floor and would never back off; with the job's floor it sees the queueing for what it is. Only ``floors``
    takes them: each worker publishes its own window's measurements (``window_floors``), so a floor that no worker
    measures any more is forgotten when the windows roll, instead of circulating between workers."""
    floors = dict(state.floors)
    for published in floors_of_others:
        for key, floor in published.items():
            if isinstance(floor, (int, float)) and floor > 0 and floor < floors.get(key, float("inf")):
                floors[key] = float(floor)
    return replace(state, floors=floors) if floors != state.floors else state


def share_latency_floors(
    api_limiter: AdaptiveLimiter, import_pacer: ImportPacer, worker_id: str, workers: Sequence[Any]
) -> None:
    """At the start and at each heartbeat: the API limiter and the import pacer learn against the job's floors
    (``with_shared_floors``), from the live workers' last published measurements (``workers``:
    ``gcbulk.state.workers.WorkerRow``); with other workers live, the API limiter leaves its slow start."""
    others = [row.progress for row in workers if row.live and row.worker_id != worker_id]
    api_limiter.state = with_shared_floors(api_limiter.state, [p.get("api_floors") or {} for p in others])
    import_pacer.state = with_shared_floors(import_pacer.state, [p.get("import_floors") or {} for p in others])
    if others:
        # The other workers' load is on the server already: a slow start (one more per answer) would overshoot
        # it and queue everybody's requests; this worker grows by one per window, like the others.
        api_limiter.state = replace(api_limiter.state, slow_start=False)

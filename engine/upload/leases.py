"""This worker's side of the job's case leases (``gcbulk.state.workers``).

* ``next_case`` claims the oldest runnable case no live worker holds. When the only runnable cases left are held by
  other live workers it waits — saying what for — because one of them may die and leave its cases to take over;
  it returns None once no runnable case is left anywhere.
* ``heartbeat_forever`` renews this worker's leases every ``heartbeat_seconds`` (a third of the lease, so two
  missed beats still leave the lease alive) and cancels any case whose lease another worker took meanwhile (this
  worker stalled longer than a lease): two workers never go on sending one case.
* On one machine with SQLite the same code runs with one worker: a claim there ignores leases left by an earlier,
  killed process, so a resume never waits for them to expire.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from gcbulk.engine.upload.journal import Journal
from gcbulk.state.workers import DEFAULT_LEASE_SECONDS

log = logging.getLogger(__name__)
# Waits for other workers must be heard (gcbulk.engine is quieted to WARNING outside debugging).
wait_log = logging.getLogger("gcbulk.waits")

LEASE_SECONDS = DEFAULT_LEASE_SECONDS
# A wait for other workers' cases says so at most this often.
VOICE_SECONDS = 30.0
# ... and looks again this often: the cases it waits for usually end by being done, not by a lease running out, and
# a worker that noticed only at its next heartbeat (10 s) kept the whole job running that much longer.
RECHECK_SECONDS = 1.0
FIRST_BEAT_SECONDS = 2.0


@dataclass(frozen=True)
class Published:
    """What a worker publishes at each heartbeat for the others, ``status`` and ``/metrics`` (``state/workers.py``)."""

    api_limit: int | None = None
    imports_limit: int | None = None
    progress: Mapping[str, Any] | None = None


class CaseLeases:
    def __init__(
        self,
        journal: Journal,
        worker_id: str,
        *,
        lease_seconds: float = LEASE_SECONDS,
        heartbeat_seconds: float | None = None,
        on_heartbeat: Callable[[], Awaitable[Published]] | None = None,
    ) -> None:
        # A third of the lease by default: two missed beats still leave the lease alive.
        heartbeat_seconds = lease_seconds / 3 if heartbeat_seconds is None else heartbeat_seconds
        if heartbeat_seconds >= lease_seconds:
            raise ValueError(
                f"the heartbeat ({heartbeat_seconds} s) must come more often than the lease "
                f"({lease_seconds} s) runs out"
            )
        self.journal = journal
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._on_heartbeat = on_heartbeat
        self.running: dict[int, anyio.CancelScope] = {}
        self.lost: set[int] = set()
        self.taken_over = 0
        self._cursor = 0  # the highest case id this pass claimed in order (takeovers aside)

    def new_pass(self) -> None:
        """A pass runs each runnable case once; the next pass starts from the oldest again."""
        self._cursor = 0

    async def start(self) -> None:
        await self.journal.runner.run(
            self.journal.ledger.register_worker, self.worker_id, host=socket.gethostname(), pid=os.getpid()
        )
        self.journal.note("worker_started", worker=self.worker_id, lease_seconds=self.lease_seconds)

    async def next_case(self, stopping: anyio.Event) -> int | None:
        """The next case for this worker, leased to it; None when none is left to run (or the run is stopping)."""
        waiting_since: float | None = None
        last_voice = 0.0
        while not stopping.is_set():
            claim = await self.journal.runner.run(
                self.journal.ledger.claim_case,
                self.worker_id,
                lease_seconds=self.lease_seconds,
                after_id=self._cursor,
                running=list(self.running),
            )
            if claim is not None:
                if claim.taken_over_from is None:
                    self._cursor = max(self._cursor, claim.case_id)
                else:  # a takeover may lie behind the cursor: the pass's order is left as it was
                    self.taken_over += 1
                    log.warning(
                        "worker %s: taking over case %d from worker %s, whose lease ran out (it stopped "
                        "renewing it); resuming from what the ledger recorded",
                        self.worker_id,
                        claim.case_id,
                        claim.taken_over_from,
                    )
                self.running[claim.case_id] = anyio.CancelScope()
                return claim.case_id
            elsewhere = await self.journal.read(self.journal.ledger.runnable_leased_elsewhere, self.worker_id)
            if not elsewhere.cases:
                return None
            now = time.monotonic()
            waiting_since = waiting_since or now
            if now - last_voice >= VOICE_SECONDS:
                last_voice = now
                wait_log.info(
                    "worker %s: %d runnable case(s) are held by worker(s) %s; waiting %.0f s so far to "
                    "take over any whose lease runs out (the first in %.0f s unless renewed)",
                    self.worker_id,
                    elsewhere.cases,
                    ", ".join(elsewhere.workers),
                    now - waiting_since,
                    elsewhere.soonest_expiry_seconds,
                )
            with anyio.move_on_after(RECHECK_SECONDS):  # the soonest expiry is only a hint: leases get renewed
                await stopping.wait()
        return None

    def scope(self, case_id: int) -> anyio.CancelScope:
        return self.running[case_id]

    async def finished(self, case_id: int, *, ended: bool) -> None:
        """The case is no longer run here. ``ended`` (done or failed): its lease ends now. Otherwise (stopped) the
        lease stays until this worker stops, which lets it run out for another worker to take the case over."""
        self.running.pop(case_id, None)
        if ended and case_id not in self.lost:
            with anyio.CancelScope(shield=True):
                await self.journal.runner.run(self.journal.ledger.release_case, self.worker_id, case_id)

    async def beat(self) -> list[int]:
        """One heartbeat: renew the leases, publish this worker's limits and counters, cancel what was lost."""
        published = await self._on_heartbeat() if self._on_heartbeat is not None else Published()
        lost = await self.journal.runner.run(
            self.journal.ledger.heartbeat,
            self.worker_id,
            lease_seconds=self.lease_seconds,
            running=list(self.running),
            api_limit=published.api_limit,
            imports_limit=published.imports_limit,
            progress=published.progress,
        )
        for case_id in lost:
            if case_id in self.running and case_id not in self.lost:
                self.lost.add(case_id)
                log.warning(
                    "worker %s: the lease of case %d ran out and another worker took the case over; "
                    "this worker stops working on it",
                    self.worker_id,
                    case_id,
                )
                self.journal.note("case_lease_lost", worker=self.worker_id, case_id=case_id)
                self.running[case_id].cancel()
        return lost

    async def heartbeat_forever(self, scope: anyio.CancelScope) -> None:
        with scope:
            # The first beat comes early: a worker joining the job now learns from this one's first measurements
            # (its latency floors) instead of a heartbeat later, when its own slow start has already overshot.
            pause = min(self.heartbeat_seconds, FIRST_BEAT_SECONDS)
            while True:
                await anyio.sleep(pause)
                await self.beat()
                pause = self.heartbeat_seconds

    async def stop(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.journal.runner.run(self.journal.ledger.worker_stopped, self.worker_id)
        self.journal.note("worker_stopped", worker=self.worker_id, taken_over=self.taken_over)

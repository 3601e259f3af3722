"""The server's limits, as the scheduler keeps under them (docs/gc-api.md §1, §2, §5).

* ``CountingGate``: live uploads below a ceiling (the server refuses a 2001st, §1) and image imports in flight (the
  server refuses a session when 16 are active, §2). Unlike a ``CapacityLimiter`` it takes several tokens at once,
  atomically, so two cases each holding half of what they need can never wait on each other forever.
* ``SweepGuard``: the server deletes every upload 24 h after its creation (§1), finished or not; a file that cannot be
  sent, completed and imported within that time at the measured rate is not started.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import anyio

from gcbulk.engine.gc.errors import GcbulkError, Interrupted
from gcbulk.engine.gc.pacer import AimdPolicy

# Not under "gcbulk.engine" (quieted to WARNING outside debugging, engine/service/logs.py): a long wait must be heard.
wait_log = log = logging.getLogger("gcbulk.waits")

GIB = 1024**3


class GateWaitTimeout(GcbulkError):
    """A case waited longer than its deadline for room under a server limit; the message names the limit."""


# A wait longer than this says at INFO what it waits for, and re-reads the server's count where it holds the truth.
VOICE_SECONDS = 10.0


class WaitVoice:
    """No wait without a voice: ``say(seconds so far)`` once every ``every`` seconds of one wait, however its time
    is cut into polls, pauses or pages."""

    def __init__(self, started: float, say: Callable[[float], None], *, every: float | None = None) -> None:
        self.started = started
        self.every = VOICE_SECONDS if every is None else every
        self.next_at = started + self.every
        self._say = say

    def speak_if_due(self, now: float) -> None:
        if now >= self.next_at:
            self._say(now - self.started)
            self.next_at = now + self.every


class UnitGate(Protocol):
    """What the upload path uses of a gate of units: ``CountingGate`` in one process, ``SharedGate``
    (``engine/upload/shared_limits.py``) when the job's workers share the server's limits."""

    @property
    def name(self) -> str: ...
    @property
    def ceiling(self) -> int: ...
    @property
    def held(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    async def acquire(self, units: int = 1, *, who: str = "") -> int: ...
    async def release(self, units: int = 1) -> None: ...
    def release_nowait(self, units: int = 1) -> None: ...
    def set_ceiling(self, ceiling: int) -> None: ...
    def stop(self) -> None: ...


class CountingGate:
    """At most ``ceiling`` units held at once; ``acquire(n)`` waits until n fit, then takes them together.

    * Every release wakes every waiter, also ``release_nowait`` from a cleanup path that cannot await: waiters sleep
      on an ``anyio.Event`` that each change sets and replaces (``Event.set`` is synchronous).
    * A request for more than the ceiling is admitted alone (when nothing else is held), never left waiting for
      itself; the gate is then over its ceiling until those units are released.
    * A wait longer than ``VOICE_SECONDS`` logs at INFO what it waits for and, with ``recount``, re-reads the
      server's own count (docs/gc-api.md §1: the upload cap counts every upload of the account, other tools' included).
    * ``stop()`` wakes every waiter with ``Interrupted``: a stopping run starts nothing new; ``wait_timeout`` ends a
      wait that cannot succeed with ``GateWaitTimeout`` (the case fails with that reason).
    """

    def __init__(
        self,
        ceiling: int,
        *,
        held: int = 0,
        name: str = "gate",
        why: str = "",
        recount: Callable[[], Awaitable[int]] | None = None,
        wait_timeout: float | None = None,
        voice_seconds: float = VOICE_SECONDS,
    ) -> None:
        if ceiling < 1:
            raise ValueError(f"{name}: the ceiling must be at least 1, not {ceiling}")
        self.ceiling = ceiling
        self.held = held
        self.name = name
        self.why = why
        self.waiting = 0
        self._recount = recount
        self._wait_timeout = wait_timeout
        self._voice_seconds = voice_seconds
        self._changed = anyio.Event()
        self._stopped = False

    def _fits(self, units: int) -> bool:
        return self.held + min(units, self.ceiling) <= self.ceiling

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def acquire(self, units: int = 1, *, who: str = "") -> int:
        """Takes ``units`` once they fit (a request above the ceiling: once nothing else is held). Returns them.

        Raises ``Interrupted`` when the gate is stopped, ``GateWaitTimeout`` past ``wait_timeout``."""
        started = time.monotonic()
        self.waiting += 1
        try:
            while not self._fits(units):
                if self._stopped:
                    raise Interrupted(f"{who or self.name}: stopped while waiting for {self.name}")
                waited = time.monotonic() - started
                if self._wait_timeout is not None and waited >= self._wait_timeout:
                    raise GateWaitTimeout(
                        f"{who or 'waiting'}: no room for {units} under the {self.name} limit of {self.ceiling} "
                        f"after {waited:.0f} s ({self.held} held{'; ' + self.why if self.why else ''})"
                    )
                step = self._voice_seconds
                if self._wait_timeout is not None:
                    step = min(step, max(self._wait_timeout - waited, 0.0))
                changed = self._changed
                with anyio.move_on_after(step) as quiet:
                    await changed.wait()
                if quiet.cancelled_caught:
                    log.info(
                        "%s waits %.0f s so far for %d of %s (%d of %d held%s)",
                        who or "a case",
                        time.monotonic() - started,
                        units,
                        self.name,
                        self.held,
                        self.ceiling,
                        f"; {self.why}" if self.why else "",
                    )
                    await self._recount_now()
            if self._stopped:
                raise Interrupted(f"{who or self.name}: stopped before taking {self.name}")
            self.held += units
            return units
        finally:
            self.waiting -= 1

    async def _recount_now(self) -> None:
        if self._recount is None:
            return
        count = await self._recount()
        if count != self.held:
            log.info("%s: the server counts %d, this run counted %d; using the server's", self.name, count, self.held)
            self.held = count
            self._wake()

    async def release(self, units: int = 1) -> None:
        self.release_nowait(units)

    def release_nowait(self, units: int = 1) -> None:
        """Releases and wakes every waiter at once; safe from a cancelled task's cleanup."""
        self.held = max(self.held - units, 0)
        self._wake()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Every waiter, now and later, raises ``Interrupted``: a stopping run takes no new slot."""
        self._stopped = True
        self._wake()

    def set_ceiling(self, ceiling: int) -> None:
        """A new ceiling (the adaptive limit moved); a higher one lets waiters in at once. Units already held stay
        held: a lower ceiling only keeps new ones out until enough are released."""
        grown = ceiling > self.ceiling
        self.ceiling = max(1, ceiling)
        if grown:
            self._wake()


class ImportPacer:
    """The import gate's ceiling, learned (``AimdPolicy``): an image import that takes about as long as the fastest
    one seen lets more in; imports that take far longer mean they only queue behind the server's import workers
    (docs/gc-api.md §10: two), and the ceiling backs off — so new imports are handed over at the rate the server completes
    them, and a failure is seen without waiting behind a long queue. An import that timed out backs off at once."""

    KEY = "image import"
    FASTEST_WINDOW = 100  # imports

    def __init__(self, gate: UnitGate, policy: AimdPolicy) -> None:
        self.gate = gate
        self.policy = policy
        self.state = policy.start()
        self.typical: float | None = None
        # Until the run has seen one import, a single case (the scout) polls for it and the others wait for its
        # measurement instead of each polling the server every fraction of a second (docs/gc-api.md §10: each poll
        # holds a web worker; at the start a dozen cases hand images over together).
        self._scout: object | None = None
        self._news: anyio.Event | None = None
        # The fastest import of the previous window and of this one (``fastest_recent_seconds``): a window longer
        # than the policy's, so a stretch with a queue on the server does not make every import look slow; still
        # forgotten in time, as the server's speed drifts over days.
        self._fastest_before = self._fastest_now = math.inf
        self._imports_in_window = 0
        gate.set_ceiling(self.state.current)

    @property
    def limit(self) -> int:
        return self.state.current

    def expected_seconds(self) -> float | None:
        """How long an image import takes lately (a moving average), None before the first: when a poll has a good
        chance to find one done. Measured through the polls themselves, so it settles where a first poll finds
        most imports done: polled too early, the next poll comes later and the average grows, and the reverse."""
        return self.typical

    def fastest_recent_seconds(self) -> float | None:
        """The fastest image import among the last ``FASTEST_WINDOW`` to 2 × ``FASTEST_WINDOW`` seen: about an
        import's own work with no queue ahead of it. None before the first."""
        fastest = min(self._fastest_before, self._fastest_now)
        return None if math.isinf(fastest) else fastest

    def scouts(self, who: object) -> bool:
        """Whether ``who`` polls for the run's first import: yes once the typical import time is known, and for the
        first to ask (until it calls ``scout_done``); the others ``await first_import()``."""
        if self.typical is not None or self._scout is who:
            return True
        if self._scout is None:
            self._scout = who
            return True
        return False

    def scout_done(self, who: object) -> None:
        """``who``'s wait ended (its import seen, failed or stopped): another case may scout if none was seen."""
        if self._scout is who:
            self._scout = None
            self._tell()

    async def first_import(self) -> None:
        """Returns once an import was seen, or the scout gave up (then the caller asks ``scouts`` again)."""
        scout = self._scout
        while self.typical is None and self._scout is scout and scout is not None:
            if self._news is None:
                self._news = anyio.Event()
            await self._news.wait()

    def _tell(self) -> None:
        if self._news is not None:
            self._news.set()
            self._news = None

    def imported(self, seconds: float) -> None:
        first = self.typical is None
        self.typical = seconds if self.typical is None else 0.8 * self.typical + 0.2 * seconds
        if first:
            self._tell()
        self._fastest_now = min(self._fastest_now, seconds)
        self._imports_in_window += 1
        if self._imports_in_window >= self.FASTEST_WINDOW:
            self._fastest_before, self._fastest_now, self._imports_in_window = self._fastest_now, math.inf, 0
        self.state = self.policy.on_success(self.state, self.KEY, seconds, self.gate.held)
        self.gate.set_ceiling(self.state.current)

    def timed_out(self) -> None:
        self.state = self.policy.on_overload(self.state)
        self.gate.set_ceiling(self.state.current)


class UnitPool:
    """Units a case took from a gate at once, for its files to draw from one by one: a case with more files than
    the gate's ceiling is admitted alone instead of its files holding slots that its other files wait for."""

    def __init__(self, units: int = 0) -> None:
        self.left = units

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


class SweepRisk(GcbulkError):
    """A file too large to finish before the server's 24 h sweep at the speed this run measures."""


@dataclass(frozen=True, kw_only=True)
class SweepGuard:
    upload_lifetime_seconds: float = 24 * 3600.0
    # Room for the import and for the sweep's hourly schedule (docs/gc-api.md §1: deleted between 24 and 25 h).
    safety_margin_seconds: float = 2 * 3600.0
    # Below this many bytes measured, the rate is noise: do not refuse anything on it.
    min_measured_bytes: int = 64 * 1024**2

    def check(self, file_name: str, file_size: int, measured_bytes: int, bytes_per_second: float) -> None:
        """Raises SweepRisk when ``file_size`` at ``bytes_per_second`` needs longer than an upload lives."""
        if measured_bytes < self.min_measured_bytes or bytes_per_second <= 0:
            return
        budget = self.upload_lifetime_seconds - self.safety_margin_seconds
        needed = file_size / bytes_per_second
        if needed > budget:
            raise SweepRisk(
                f"{file_name}: {file_size / 1024**2:.1f} MiB at the measured {bytes_per_second / 1024**2:.2f} MiB/s "
                f"needs about {_duration(needed)}, but Grand Challenge deletes an upload "
                f"{_duration(self.upload_lifetime_seconds)} after creating it; send it from a faster link, or alone "
                "with fewer files in flight"
            )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

"""The server's limits, as the scheduler keeps under them (contract §1, §2, §5).

* ``CountingGate``: live uploads below a ceiling (the server refuses a 2001st, §1) and image imports in flight (the
  server refuses a session when 16 are active, §2). Unlike a ``CapacityLimiter`` it takes several tokens at once,
  atomically, so two cases each holding half of what they need can never wait on each other forever.
* ``SweepGuard``: the server deletes every upload 24 h after its creation (§1), finished or not; a file that cannot be
  sent, completed and imported within that time at the measured rate is not started.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from gcbulk.engine.gc.errors import GcbulkError

log = logging.getLogger(__name__)

GIB = 1024**3


class GateTimeout(GcbulkError):
    """Waited past the deadline for room under a server limit; the message says which limit and who holds it."""


class CountingGate:
    """At most ``ceiling`` units held at once; ``acquire(n)`` waits until n fit, then takes them together.

    Every release wakes every waiter, also ``release_nowait`` from a cleanup path that cannot await (an anyio
    ``Event`` is set synchronously; a ``Condition`` needs its lock, which such a path cannot take). A wait longer than
    ``voice_after`` seconds says at INFO what it waits for, and again every ``voice_every``; where the server holds
    the truth (``refresh``: the account's live uploads), the count is read again from the server while waiting; after
    ``deadline`` seconds the wait ends in a ``GateTimeout`` that names the limit.
    """

    def __init__(self, ceiling: int, *, held: int = 0, name: str = "gate", why: str = "",
                 refresh: Callable[[], Awaitable[int]] | None = None, voice_after: float = 5.0,
                 voice_every: float = 30.0, deadline: float | None = None) -> None:
        if ceiling < 1:
            raise ValueError(f"{name}: the ceiling must be at least 1, not {ceiling}")
        self.ceiling = ceiling
        self.held = held
        self.name = name
        self.why = why
        self._refresh = refresh
        self._voice_after = voice_after
        self._voice_every = voice_every
        self._deadline = deadline
        self._waiters: list[anyio.Event] = []
        self.waiting = 0  # tasks waiting now (for metrics and the progress line)

    async def acquire(self, units: int = 1, *, for_what: str = "") -> int:
        """Takes ``units`` — at most the ceiling: a case needing more than the limit allows is admitted alone (it
        waits until nothing else is held), never left waiting for itself. Returns what it took."""
        units = min(units, self.ceiling)
        started = time.monotonic()
        next_voice = started + self._voice_after
        self.waiting += 1
        try:
            while self.held + units > self.ceiling:
                now = time.monotonic()
                if self._deadline is not None and now - started > self._deadline:
                    raise GateTimeout(
                        f"{for_what or 'waited'}: no room under the limit of {self.name} for "
                        f"{_duration(now - started)} ({self.held} of {self.ceiling} in use{self._because()})")
                if now >= next_voice:
                    if self._refresh is not None:
                        self.held = await self._refresh()  # the server's count is the truth (contract §1)
                        if self.held + units <= self.ceiling:
                            break
                    log.info("waiting %s for %d of %s%s: %d of %d in use%s", _duration(now - started), units,
                             self.name, f" ({for_what})" if for_what else "", self.held, self.ceiling,
                             self._because())
                    next_voice = now + self._voice_every
                event = anyio.Event()
                self._waiters.append(event)
                wake_at = next_voice if self._deadline is None else min(next_voice, started + self._deadline)
                with anyio.move_on_after(max(0.01, wake_at - time.monotonic())):
                    await event.wait()
            self.held += units
        finally:
            self.waiting -= 1
        return units

    def _because(self) -> str:
        return f"; {self.why}" if self.why else ""

    async def release(self, units: int = 1) -> None:
        self.release_nowait(units)

    def release_nowait(self, units: int = 1) -> None:
        self.held = max(self.held - units, 0)
        waiters, self._waiters = self._waiters, []
        for event in waiters:
            event.set()


class SweepRisk(GcbulkError):
    """A file too large to finish before the server's 24 h sweep at the speed this run measures."""


@dataclass(frozen=True, kw_only=True)
class SweepGuard:
    upload_lifetime_seconds: float = 24 * 3600.0
    # Room for the import and for the sweep's hourly schedule (contract §1: deleted between 24 and 25 h).
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

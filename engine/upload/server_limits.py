"""The server's limits, as the scheduler keeps under them (contract §1, §2, §5).

* ``CountingGate``: live uploads below a ceiling (the server refuses a 2001st, §1) and image imports in flight (the
  server refuses a session when 16 are active, §2). Unlike a ``CapacityLimiter`` it takes several tokens at once,
  atomically, so two cases each holding half of what they need can never wait on each other forever.
* ``SweepGuard``: the server deletes every upload 24 h after its creation (§1), finished or not; a file that cannot be
  sent, completed and imported within that time at the measured rate is not started.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from gcbulk.engine.gc.errors import GcbulkError

GIB = 1024**3


class CountingGate:
    """At most ``ceiling`` units held at once; ``acquire(n)`` waits until n fit, then takes them together."""

    def __init__(self, ceiling: int, *, held: int = 0, name: str = "gate") -> None:
        if ceiling < 1:
            raise ValueError(f"{name}: the ceiling must be at least 1, not {ceiling}")
        self.ceiling = ceiling
        self.held = held
        self.name = name
        self._changed = anyio.Condition()

    async def acquire(self, units: int = 1) -> int:
        """Takes ``units`` (at most the ceiling: a larger request would wait forever). Returns what it took."""
        units = min(units, self.ceiling)
        async with self._changed:
            while self.held + units > self.ceiling:
                await self._changed.wait()
            self.held += units
        return units

    async def release(self, units: int = 1) -> None:
        async with self._changed:
            self.held = max(self.held - units, 0)
            self._changed.notify_all()

    def release_nowait(self, units: int = 1) -> None:
        """For cleanup paths that cannot await (a cancelled task): waiters are woken by the next release."""
        self.held = max(self.held - units, 0)


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

"""The emulator's notion of time, which tests can move forward.

Time-based rules (presigned URL expiry, the 24 h sweep of uploads, signed download URLs) all read this clock, so a test
can jump a day ahead through the admin endpoint instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._offset_seconds = 0.0
        self._listeners: list[Callable[[], None]] = []

    def __getstate__(self) -> dict[str, object]:
        # Saved with the state (--data-dir, emulator/persistence.py: the URL signer holds the clock): the offset is
        # state, the listeners are this process's subscriptions (the running sweep's), which a restart makes anew.
        return {"_offset_seconds": self._offset_seconds, "_listeners": []}

    def on_advance(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Calls ``listener`` after every advance (from the advancing thread); returns a function that unsubscribes.

        The sweep waits on it, so a test that jumps a day ahead sees the hourly task run at once.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def timestamp(self) -> float:
        """Seconds since the epoch, including any advance."""
        return time.time() + self._offset_seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp(), tz=UTC)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset_seconds += seconds
        for listener in list(self._listeners):
            listener()

    def since(self, moment: datetime) -> timedelta:
        return self.now() - moment

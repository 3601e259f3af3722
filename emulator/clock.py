"""The emulator's notion of time, which tests can move forward.

Time-based rules (presigned URL expiry, the 24 h sweep of uploads, signed download URLs) all read this clock, so a test
can jump a day ahead through the admin endpoint instead of sleeping.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone


class Clock:
    def __init__(self) -> None:
        self._offset_seconds = 0.0

    def timestamp(self) -> float:
        """Seconds since the epoch, including any advance."""
        return time.time() + self._offset_seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp(), tz=timezone.utc)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset_seconds += seconds

    def since(self, moment: datetime) -> timedelta:
        return self.now() - moment

"""The server's waits, kept for people: every time Grand Challenge holds a run back (a 429, the upload cap, the upload
quota, a cap held by this job's other workers, a slow import), one ``server_wait`` event in the event file — the
migration report draws them on its time line — and the reasons a run waits *now*, for the live ``/status`` page.

Two sources, because the engine says it in two places: each retry's reason (``RunState.count_retry_reason``, the
same vocabulary as the ``gcbulk_retries`` metric) and the long waits the engine announces on the ``gcbulk.waits``
logger. A retry is recorded from the first only, so a long retry that is also announced counts once. Only
categories go to the event file, never the announced text: it names cases, and the report follows
``--redact-titles``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gcbulk.engine.upload.progress import EventLog

WAITS_LOGGER = "gcbulk.waits"
# Retry reasons (engine/service/metrics.py retry_reason) that mean the server asked us to slow down or wait.
_SERVER_RETRIES = {"throttled": "throttled", "upload_cap": "upload_cap", "upload_quota": "quota_exhausted"}
# Announced waits by the module that announces them (the logger's record.module), retries left to the hook above.
_ANNOUNCERS = {
    "shared_limits": "cap_held_by_others",
    "server_limits": "server_limit",
    "leases": "cases_leased_elsewhere",
    "import_wait": "import_slow",
    "targeted_sessions": "import_slow",
}
CATEGORY_TEXT = {
    "throttled": "throttled by the server (429)",
    "upload_cap": "upload cap reached (2000 open uploads)",
    "quota_exhausted": "upload quota exhausted",
    "cap_held_by_others": "cap held by this job's other workers",
    "server_limit": "server limit reached (images importing, uploads open)",
    "cases_leased_elsewhere": "cases held by other workers",
    "import_slow": "waiting for the server's imports",
}
# A wait announced within this many seconds is a wait "now": the engine repeats its announcements every 10–30 s.
CURRENT_SECONDS = 45.0


class WaitRecorder(logging.Handler):
    """Writes a ``server_wait`` event for each wait and remembers when each category was last seen.

    Install it on the ``gcbulk.waits`` logger with :meth:`install` and pass :meth:`retry` as the run state's retry
    hook; :meth:`close` removes it."""

    def __init__(self, events: EventLog, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(level=logging.INFO)
        self.events = events
        self._clock = clock
        self._last_seen: dict[str, float] = {}

    def install(self) -> WaitRecorder:
        logging.getLogger(WAITS_LOGGER).addHandler(self)
        return self

    def close(self) -> None:
        logging.getLogger(WAITS_LOGGER).removeHandler(self)
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        category = _ANNOUNCERS.get(record.module)
        if category is not None:
            self._seen(category)

    def retry(self, reason: str) -> None:
        """The run state's retry hook: a retry whose reason is the server's limit is a wait."""
        category = _SERVER_RETRIES.get(reason)
        if category is not None:
            self._seen(category)

    def _seen(self, category: str) -> None:
        self._last_seen[category] = self._clock()
        self.events.emit("server_wait", category=category)

    def current(self) -> list[str]:
        """The categories seen within ``CURRENT_SECONDS``, in words, most recent first."""
        now = self._clock()
        recent = sorted(
            ((seen, category) for category, seen in self._last_seen.items() if now - seen <= CURRENT_SECONDS),
            reverse=True,
        )
        return [CATEGORY_TEXT.get(category, category) for _, category in recent]

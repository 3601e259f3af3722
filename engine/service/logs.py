"""What a run tells the people and tools watching it: JSON lines on stdout (or a rich display on a terminal), the same
schema as the event file, a summary line every few seconds, and never the API token.

One schema (the event file's, ``gcbulk.engine.upload.progress.EventLog``, plus ``level``)::

    {"at": "2025-11-20T10:00:01.234567Z", "level": "info", "event": "case_done", "case": "patient001", ...}

``at`` is UTC; ``event`` names what happened (a ledger transition such as ``case_done``, ``summary``, ``log`` for a
plain log message); then the event's own fields: ``case`` (title), ``key`` (ledger ids), ``reason`` / ``error``,
``bytes``, ``rate`` (bytes/s), ``eta_seconds``, ``message``. Container log collectors (Loki, CloudWatch, ELK) index
these keys without a parsing rule.

The token is registered with :class:`SecretRedactor`, a filter on every handler this module installs, so no log
line can carry it even when a library formats a request into an exception message.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

from gcbulk.engine.service.log_format import (  # re-exported: the names callers know this module by
    _EVENT,
    _FIELDS,
    EVENT_LOGGER,
    SUMMARY_LOGGER,
    JsonLineFormatter,
    SecretRedactor,
    TextFormatter,
    event_level,
)
from gcbulk.engine.upload.progress import EventLog, StatsSnapshot


class ConsoleEventLog(EventLog):
    """The engine's event log (``gcbulk.engine.upload.progress.EventLog``: one JSON line per state change, in a file) that also
    hands every event to the ``gcbulk.events`` logger, so stdout shows the same events in the same schema.

    The engine's own periodic ``progress`` event stays in the file only: on stdout the ``summary`` line (which adds
    the ledger's cases by state and keeps coming while a follow-mode run waits) takes its place."""

    def emit(self, event: str, **fields: Any) -> None:
        super().emit(event, **fields)
        if event != "progress":
            log_event(event, **fields)


def log_event(event: str, *, level: int | None = None, logger: str = EVENT_LOGGER, **fields: Any) -> None:
    """One structured line: ``event`` plus its fields (None values left out)."""
    level = level if level is not None else event_level(event)
    target = logging.getLogger(logger)
    if not target.isEnabledFor(level):  # a case's dozen DEBUG step lines at the default INFO: nothing to build
        return
    fields = {key: value for key, value in fields.items() if value is not None}
    target.log(level, "%s", event, extra={_EVENT: event, _FIELDS: fields})


# ---- the summary line ------------------------------------------------------------------------------------------


def summary_fields(
    snapshot: StatsSnapshot, cases_by_state: Mapping[str, int], *, transferring: bool = True
) -> dict[str, Any]:
    """The periodic summary: cases by state (from the ledger: the whole job, not just this run), bytes, rate, ETA
    (from the engine's ``StatsSnapshot``, the one source of transfer numbers). Between passes (``transferring``
    False) the rate is 0: the snapshot's windowed rate would only decay slowly from the last pass."""
    return {
        "cases": dict(sorted(cases_by_state.items())),
        "cases_total": sum(cases_by_state.values()),
        "bytes": snapshot.bytes_done,
        "bytes_total": snapshot.bytes_total,
        "rate": round(snapshot.bytes_per_second, 1) if transferring else 0.0,
        # Only while a pass moves bytes: between passes, or stopped, there is no honest estimate (left out).
        "eta_seconds": None if snapshot.eta_seconds is None or not transferring else round(snapshot.eta_seconds, 1),
        "retries": snapshot.retries,
    }


def log_summary(
    snapshot: StatsSnapshot, cases_by_state: Mapping[str, int], *, transferring: bool = True, **extra: Any
) -> dict[str, Any]:
    fields = summary_fields(snapshot, cases_by_state, transferring=transferring) | extra
    log_event("summary", level=logging.INFO, logger=SUMMARY_LOGGER, **fields)
    return fields


# ---- set-up ------------------------------------------------------------------------------------------------------


class LogSetup:
    """The handlers installed by :func:`configure`; ``close()`` removes them (tests configure logging repeatedly)."""

    def __init__(
        self, handler: logging.Handler, redactor: SecretRedactor, json_lines: bool, display: Any = None
    ) -> None:
        self.handler = handler
        self.redactor = redactor
        self.json_lines = json_lines
        self.display = display  # gcbulk.engine.service.display.ProgressDisplay on a terminal, else None
        self._levels = {name: logging.getLogger(name).level for name in ("", "gcbulk.engine", "aiohttp.access")}
        self._progress_propagates = logging.getLogger(PROGRESS_LOGGER).propagate
        self.extra_handlers: list[tuple[logging.Logger, logging.Handler]] = []

    def close(self) -> None:
        if self.display is not None:
            self.display.stop()
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        for logger, handler in self.extra_handlers:
            logger.removeHandler(handler)
            handler.close()
        logging.getLogger(PROGRESS_LOGGER).propagate = self._progress_propagates


PROGRESS_LOGGER = "gcbulk.progress"  # the engine's own periodic line (engine/upload/transfer.py)


def configure(
    level: str = "INFO",
    fmt: str = "auto",
    *,
    stream: IO[str] | None = None,
    secrets: Iterable[str] = (),
    progress_stream: IO[str] | None = None,
) -> LogSetup:
    """Installs one handler on the root logger: JSON lines (``fmt`` json, or auto and ``stream`` not a terminal),
    a rich display (auto on a terminal), or plain text. Every record passes the token redactor.

    The engine's periodic progress line goes to ``progress_stream`` as plain text (``gcbulk run`` shows it on
    stderr, beside its other words for the person at the terminal); without one it is dropped: the ``summary``
    event says the same, and more, on ``stream``."""
    stream = stream or sys.stdout
    redactor = SecretRedactor(secrets)
    interactive = fmt == "auto" and stream.isatty()
    json_lines = fmt == "json" or (fmt == "auto" and not interactive)
    display = None
    if interactive:
        from gcbulk.engine.service.display import ProgressDisplay

        display = ProgressDisplay(stream)
        handler: logging.Handler = display.log_handler()
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonLineFormatter() if json_lines else TextFormatter())
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_gcbulk", False)]:
        root.removeHandler(old)
    handler._gcbulk = True  # type: ignore[attr-defined]
    setup = LogSetup(handler, redactor, json_lines, display)  # remembers the levels it is about to change
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    # The engine logs each retry at INFO; the summary counts them and the metrics break them down by reason, so
    # they are shown one by one only when debugging.
    logging.getLogger("gcbulk.engine").setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    progress = logging.getLogger(PROGRESS_LOGGER)
    progress.propagate = False
    for old in [h for h in progress.handlers if getattr(h, "_gcbulk", False)]:
        progress.removeHandler(old)
    if progress_stream is not None and not interactive:
        plain = logging.StreamHandler(progress_stream)
        plain.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        plain.addFilter(redactor)
        plain._gcbulk = True  # type: ignore[attr-defined]
        progress.addHandler(plain)
        setup.extra_handlers.append((progress, plain))
    return setup

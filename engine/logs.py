"""What a run tells the people and tools watching it: JSON lines on stdout (or a rich display on a terminal), the same
schema as the event file, a summary line every few seconds, and never the API token.

One schema (the event file's, ``engine.progress.EventLog``, plus ``level``)::

    {"at": "2025-11-20T10:00:01.234567Z", "level": "info", "event": "case_done", "case": "patient001", ...}

``at`` is UTC; ``event`` names what happened (a ledger transition such as ``case_done``, ``summary``, ``log`` for a
plain log message); then the event's own fields: ``case`` (title), ``key`` (ledger ids), ``reason`` / ``error``,
``bytes``, ``rate`` (bytes/s), ``eta_seconds``, ``message``. Container log collectors (Loki, CloudWatch, ELK) index
these keys without a parsing rule.

The token is registered with :class:`SecretRedactor`, a filter on every handler this module installs, so no log
line can carry it even when a library formats a request into an exception message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

from engine.progress import EventLog, StatsSnapshot, iso_utc

REDACTED = "[REDACTED]"
EVENT_LOGGER = "gcbulk.events"
SUMMARY_LOGGER = "gcbulk.summary"
_EVENT = "gcbulk_event"
_FIELDS = "gcbulk_fields"
# An Authorization header or bearer credential written into any text (an exception, a debug dump of a request).
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)([A-Za-z0-9._~+/=-]{4,})")
# At INFO a case is a handful of lines (started, done or failed); the steps of its values, uploads and parts (a dozen
# per case, one per part of every file) are DEBUG, so a million-case migration stays readable. Failures are WARNING.
_DEBUG_PREFIXES = ("part_", "upload_", "item_", "display_set_")
_WARNING_SUFFIXES = ("_failed", "_expired", "_aborted", "_abandoned", "_not_created")
_WARNING_EVENTS = frozenset({"stop_requested", "stopping_now", "transient_fault"})


class SecretRedactor(logging.Filter):
    """Replaces every registered secret (and any ``Bearer …`` credential) in a record before a handler writes it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if secret and secret.strip():
            self._secrets.add(secret.strip())
            # "Bearer tok" and "tok" are both accepted as tokens (contract §0); the last word is the secret.
            self._secrets.add(secret.split()[-1])

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in sorted(self._secrets, key=len, reverse=True):
                value = value.replace(secret, REDACTED)
            return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", value)
        if isinstance(value, Mapping):
            return {key: self.redact(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact(item) for item in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            # Formatted here, redacted, then dropped: a traceback's text can hold a request's headers.
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        fields = getattr(record, _FIELDS, None)
        if fields:
            setattr(record, _FIELDS, self.redact(fields))
        return True


def event_level(event: str) -> int:
    if event in _WARNING_EVENTS or event.endswith(_WARNING_SUFFIXES):
        return logging.WARNING
    if event.startswith(_DEBUG_PREFIXES):
        return logging.DEBUG
    return logging.INFO


def record_as_dict(record: logging.LogRecord) -> dict[str, Any]:
    """A log record in the event schema (see the module docstring)."""
    event = getattr(record, _EVENT, None)
    line: dict[str, Any] = {"at": iso_utc(record.created), "level": record.levelname.lower(),
                            "event": event or "log"}
    if event is None:
        line["logger"] = record.name
        line["message"] = record.getMessage()
    line.update(getattr(record, _FIELDS, None) or {})
    if record.exc_text:
        line["error"] = record.exc_text
    return line


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        return json.dumps(record_as_dict(record), default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``10:00:01 INFO case_done case=patient001 key=[3]`` for people reading a plain (non-JSON) stream; with
    ``head=False`` only the part after the level (a rich handler prints time and level itself)."""

    def __init__(self, *, head: bool = True) -> None:
        super().__init__()
        self.head = head

    def format(self, record: logging.LogRecord) -> str:
        line = record_as_dict(record)
        head = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} " if self.head else ""
        if line["event"] == "log":
            text = line["message"]
        else:
            text = line["event"] + "".join(
                f" {key}={value}" for key, value in line.items() if key not in ("at", "level", "event")
            )
        return head + text + (f"\n{line['error']}" if "error" in line and line["event"] == "log" else "")


class ConsoleEventLog(EventLog):
    """The engine's event log (``engine.progress.EventLog``: one JSON line per state change, in a file) that also
    hands every event to the ``gcbulk.events`` logger, so stdout shows the same events in the same schema.

    The engine's own periodic ``progress`` event stays in the file only: on stdout the ``summary`` line (which adds
    the ledger's cases by state and keeps coming while a follow-mode run waits) takes its place."""

    def emit(self, event: str, **fields: Any) -> None:
        super().emit(event, **fields)
        if event != "progress":
            log_event(event, **fields)


def log_event(event: str, *, level: int | None = None, logger: str = EVENT_LOGGER, **fields: Any) -> None:
    """One structured line: ``event`` plus its fields (None values left out)."""
    fields = {key: value for key, value in fields.items() if value is not None}
    logging.getLogger(logger).log(level if level is not None else event_level(event), "%s", event,
                                  extra={_EVENT: event, _FIELDS: fields})


# ---- the summary line ------------------------------------------------------------------------------------------


def summary_fields(snapshot: StatsSnapshot, cases_by_state: Mapping[str, int], *,
                   transferring: bool = True) -> dict[str, Any]:
    """The periodic summary: cases by state (from the ledger: the whole job, not just this run), bytes, rate, ETA
    (from the engine's ``StatsSnapshot``, the one source of transfer numbers). Between passes (``transferring``
    False) the rate is 0: the snapshot's windowed rate would only decay slowly from the last pass."""
    return {
        "cases": dict(sorted(cases_by_state.items())),
        "cases_total": sum(cases_by_state.values()),
        "bytes": snapshot.bytes_done,
        "bytes_total": snapshot.bytes_total,
        "rate": round(snapshot.bytes_per_second, 1) if transferring else 0.0,
        "eta_seconds": None if snapshot.eta_seconds is None else round(snapshot.eta_seconds, 1),
        "retries": snapshot.retries,
    }


def log_summary(snapshot: StatsSnapshot, cases_by_state: Mapping[str, int], *, transferring: bool = True,
                **extra: Any) -> dict[str, Any]:
    fields = summary_fields(snapshot, cases_by_state, transferring=transferring) | extra
    log_event("summary", level=logging.INFO, logger=SUMMARY_LOGGER, **fields)
    return fields


# ---- set-up ------------------------------------------------------------------------------------------------------


class LogSetup:
    """The handlers installed by :func:`configure`; ``close()`` removes them (tests configure logging repeatedly)."""

    def __init__(self, handler: logging.Handler, redactor: SecretRedactor, json_lines: bool,
                 display: Any = None) -> None:
        self.handler = handler
        self.redactor = redactor
        self.json_lines = json_lines
        self.display = display  # engine.display.ProgressDisplay on a terminal, else None
        self._levels = {name: logging.getLogger(name).level for name in ("", "engine", "aiohttp.access")}
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


PROGRESS_LOGGER = "gcbulk.progress"  # the engine's own periodic line (engine/transfer.py)


def configure(level: str = "INFO", fmt: str = "auto", *, stream: IO[str] | None = None,
              secrets: Iterable[str] = (), progress_stream: IO[str] | None = None) -> LogSetup:
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
        from engine.display import ProgressDisplay

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
    logging.getLogger("engine").setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
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

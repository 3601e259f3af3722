"""How one log record reads: as a JSON line (the event file's schema plus ``level``) or as text, with the API token
redacted by :class:`SecretRedactor` before any handler sees it. Shared by the plain handlers (``logs``) and the rich
terminal display (``display``), which is why it is a module of its own."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from gcbulk.engine.upload.progress import iso_utc
from gcbulk.redaction import redact, register_secret

EVENT_LOGGER = "gcbulk.events"
SUMMARY_LOGGER = "gcbulk.summary"
_EVENT = "gcbulk_event"
_FIELDS = "gcbulk_fields"
# At INFO a case is a handful of lines (started, done or failed); the steps of its values, uploads and parts (a dozen
# per case, one per part of every file) are DEBUG, so a million-case migration stays readable. Failures are WARNING.
_DEBUG_PREFIXES = ("part_", "upload_", "item_", "display_set_")
_WARNING_SUFFIXES = ("_failed", "_expired", "_aborted", "_abandoned", "_not_created")
_WARNING_EVENTS = frozenset({"stop_requested", "stopping_now", "transient_fault"})


class SecretRedactor(logging.Filter):
    """Replaces every registered secret (and any ``Bearer …`` credential) in a record before a handler writes it.
    The secrets given here join the process-wide set of ``gcbulk/redaction.py``, the one redaction path."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        register_secret(secret)
        if secret and secret.strip():
            self._secrets.update({secret.strip(), secret.split()[-1]})

    def redact(self, value: Any) -> Any:
        return redact(value, self._secrets)

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
    line: dict[str, Any] = {"at": iso_utc(record.created), "level": record.levelname.lower(), "event": event or "log"}
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
            text = str(line["message"])
        else:
            text = str(line["event"]) + "".join(
                f" {key}={value}" for key, value in line.items() if key not in ("at", "level", "event")
            )
        return head + text + (f"\n{line['error']}" if "error" in line and line["event"] == "log" else "")

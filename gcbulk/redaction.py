"""The one redaction path: every string that can hold server text is scrubbed of the API token before it is stored
(ledger, event file, report) or printed (stderr, status, export and reorder logs).

Two places apply it. The API client scrubs each response body as it arrives (``engine/gc/client.py``), so nothing
that came from the server — an error body that echoes the Authorization header, a title, a URL — carries the token
into the engine at all. The log filter (``engine/service/log_format.SecretRedactor``) and the command-line error
path scrub again on the way out, for text that did not come from a response (a traceback, an exception's repr).
The set of secrets is process-wide: a command registers its token once when it reads it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"
_REDACTED_BYTES = REDACTED.encode()
# Values that hold no text (their exact types: a subclass may render itself as anything).
_UNTOUCHED = frozenset({int, float, bool, type(None)})
# An Authorization header or bearer credential written into any text (an exception, a debug dump of a request).
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)([A-Za-z0-9._~+/=-]{4,})")
# A secret shorter than this is not scrubbed from arbitrary text: replacing "ab" everywhere would garble the output
# and protect nothing (real knox tokens are 64 hex characters).
_MIN_SECRET_CHARS = 4

_lock = threading.Lock()
_secrets: set[str] = set()
# The secrets longest first (a secret that contains another is replaced whole), as text and as bytes: rebuilt when one
# is registered (a few times per process), read by every redaction — an event's every field, every response body —
# without the lock (the tuple is replaced, never changed), where sorting the set again each time was a measurable
# part of a run's CPU.
_ordered: tuple[tuple[str, bytes], ...] = ()


def register_secret(secret: str | None) -> None:
    """Adds ``secret`` (and its last word: "Bearer tok" and "tok" are both tokens, docs/gc-api.md §0) to the process-wide
    set that :func:`redact` removes."""
    if not secret or not secret.strip():
        return
    global _ordered
    with _lock:
        for word in {secret.strip(), secret.split()[-1]}:
            if len(word) >= _MIN_SECRET_CHARS:
                _secrets.add(word)
        _ordered = tuple((word, word.encode()) for word in sorted(_secrets, key=len, reverse=True))


def registered_secrets() -> frozenset[str]:
    with _lock:
        return frozenset(_secrets)


def _in_order(extra: frozenset[str] | set[str]) -> tuple[tuple[str, bytes], ...]:
    if not extra:
        return _ordered
    words = {word for word, _ in _ordered} | set(extra)
    return tuple((word, word.encode()) for word in sorted(words, key=len, reverse=True))


def redact_text(text: str, extra: frozenset[str] | set[str] = frozenset()) -> str:
    for secret, _ in _in_order(extra):
        text = text.replace(secret, REDACTED)
    return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def redact(value: Any, extra: frozenset[str] | set[str] = frozenset()) -> Any:
    """``value`` with every registered secret (and any ``Bearer …`` credential) replaced, through strings, mappings
    (keys too), lists and tuples; other values are returned as they are."""
    if type(value) in _UNTOUCHED:  # most of an event's fields (ids, sizes, counts): nothing to look at or through
        return value
    if isinstance(value, str):
        return redact_text(value, extra)
    if isinstance(value, bytes):
        return redact_bytes(value, extra)
    if isinstance(value, Mapping):
        return {redact(key, extra): redact(item, extra) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, extra) for item in value]
    return value


def redact_bytes(raw: bytes, extra: frozenset[str] | set[str] = frozenset()) -> bytes:
    """A response body as bytes, scrubbed before it is decoded or parsed: JSON escapes cannot hide the token because
    a token is plain ASCII (``[A-Za-z0-9]``), which JSON never escapes."""
    for _, secret in _in_order(extra):
        raw = raw.replace(secret, _REDACTED_BYTES)
    return raw


def redact_exception(exc: BaseException) -> str:
    """The one-line text of ``exc`` (type and message), scrubbed: what a command prints when it stops on it."""
    return redact_text(str(exc) or type(exc).__name__)

"""Waiting for Grand Challenge to import the values of a display set, and finding out why one failed.

Image and file values are applied in the background (contract §3, §9): the PATCH answers 200 with no new values, and
each value appears in the display set once its import is done. The engine creates each image value's upload session
itself and follows it by pk (``engine/upload/case_upload.py``). Only where a server refuses to create sessions does it
fall back to naming the uploads in the PATCH; the session the server then makes is found by ``UploadSessionIndex``,
which scans the session list (it has no filters, contract §2, §10) — at most every few seconds, shared by all cases —
and matches sessions to cases by the upload pks they hold.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import anyio
from gcbulk.engine.gc.client import GrandChallengeClient, socket_slug_of

SESSION_FAILED = "Failed"
SESSION_CANCELLED = "Cancelled"
SESSION_SUCCEEDED = "Succeeded"
SESSION_QUEUED = "Queued"  # created without a target: inert until a values PATCH names it
SESSION_ENDED_BADLY = (SESSION_FAILED, SESSION_CANCELLED)


def session_upload_pks(session: dict[str, Any]) -> list[str]:
    """The upload pks of a session: ``user_uploads`` where the server sends it, else the ``uploads`` URLs' last part."""
    if session.get("user_uploads") is not None:
        return [str(pk) for pk in session["user_uploads"]]
    return [url.rstrip("/").rsplit("/", 1)[-1] for url in session.get("uploads") or []]


def present_sockets(display_set: dict[str, Any], super_kinds: dict[str, str]) -> set[str]:
    """The sockets of ``super_kinds`` (slug → Image | File | Value) whose value is in place in ``display_set``."""
    field_of = {"Image": "image", "File": "file"}
    present = set()
    for value in display_set.get("values") or []:
        slug = socket_slug_of(value)
        kind = super_kinds.get(slug)
        if kind is None:
            continue
        field = field_of.get(kind)
        if field is None or value.get(field) is not None:
            present.add(slug)
    return present


class UploadSessionIndex:
    """Upload sessions by upload pk, refreshed at most every ``min_interval`` seconds, one refresh at a time."""

    def __init__(self, client: GrandChallengeClient, *, min_interval: float) -> None:
        self._client = client
        self._min_interval = min_interval
        self._by_upload: dict[str, list[dict[str, Any]]] = {}
        self._refreshed_at: float | None = None
        self._lock = anyio.Lock()

    async def _refresh(self) -> None:
        async with self._lock:
            if self._refreshed_at is not None and time.monotonic() - self._refreshed_at < self._min_interval:
                return
            by_upload: dict[str, list[dict[str, Any]]] = {}
            async for session in self._client.iterate_upload_sessions():
                slim = {k: session.get(k) for k in ("pk", "status", "error_message")}
                for pk in session_upload_pks(session):
                    by_upload.setdefault(pk, []).append(slim)
            self._by_upload = by_upload
            self._refreshed_at = time.monotonic()

    async def find(self, upload_pks: Iterable[str], *, refresh: bool = True) -> dict[str, Any] | None:
        """The session that took these uploads; when several did (a PATCH sent twice), the best outcome wins."""
        if refresh:
            await self._refresh()
        candidates = [s for pk in upload_pks for s in self._by_upload.get(pk, [])]
        if not candidates:
            return None
        rank = {SESSION_SUCCEEDED: 0, SESSION_FAILED: 2, SESSION_CANCELLED: 2}
        return min(candidates, key=lambda s: rank.get(s.get("status"), 1))

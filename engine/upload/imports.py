"""Waiting for Grand Challenge to import the values of a display set, and finding out why one failed.

Image and file values are applied in the background (docs/gc-api.md §3, §9): the PATCH answers 200 with no new values, and
each value appears in the display set once its import is done. Each image value is imported by its own upload
session, which gcbulk creates aimed at the display set (``POST cases/upload-sessions/`` with the uploads,
``display_set`` and ``interface``: docs/gc-api.md §10 path (b), ``engine/upload/targeted_sessions.py``) and records in the
ledger; a Queued session recorded by an older gcbulk is still named in a values PATCH (path (a)).
``GET cases/upload-sessions/{pk}/`` then says
whether it failed, with the server's ``error_message`` — also when a refused segmentation has already emptied its
upload list (§10). Only a server that refuses such sessions falls back to ``user_uploads`` in the PATCH, where the
session is unknown: ``UploadSessionIndex`` then scans the session list (no filters, §2) and matches by upload pks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio

from gcbulk.engine.gc.client import GrandChallengeClient, socket_slug_of
from gcbulk.engine.gc.errors import ApiError, NotFound, UploadsSwept
from gcbulk.engine.upload.crashpoints import crash_point
from gcbulk.engine.upload.journal import Journal, step

log = logging.getLogger(__name__)

SESSION_QUEUED = "Queued"
SESSION_FAILED = "Failed"
SESSION_CANCELLED = "Cancelled"
SESSION_SUCCEEDED = "Succeeded"
SESSION_ENDED_BADLY = (SESSION_FAILED, SESSION_CANCELLED)


def session_upload_pks(session: dict[str, Any]) -> list[str]:
    """The upload pks of a session: ``user_uploads`` where the server sends it, else the ``uploads`` URLs' last part."""
    if session.get("user_uploads") is not None:
        return [str(pk) for pk in session["user_uploads"]]
    return [url.rstrip("/").rsplit("/", 1)[-1] for url in session.get("uploads") or []]


def present_sockets(display_set: dict[str, Any], super_kinds: dict[str, str]) -> set[str]:
    """The sockets of ``super_kinds`` (slug → Image | File | Value) whose value is in place in ``display_set``."""
    field_of = {"Image": "image", "File": "file"}
    present: set[str] = set()
    for value in display_set.get("values") or []:
        slug = socket_slug_of(value)
        kind = super_kinds.get(slug) if slug is not None else None
        if slug is None or kind is None:
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

    async def _refresh(self, *, force: bool = False) -> None:
        asked_at = time.monotonic()
        async with self._lock:
            if self._refreshed_at is not None and (
                self._refreshed_at >= asked_at if force else time.monotonic() - self._refreshed_at < self._min_interval
            ):
                return
            started = time.monotonic()  # a session created before this is in the listing
            by_upload: dict[str, list[dict[str, Any]]] = {}
            async for session in self._client.iterate_upload_sessions():
                slim = {k: session.get(k) for k in ("pk", "status", "error_message")}
                for pk in session_upload_pks(session):
                    by_upload.setdefault(pk, []).append(slim)
            self._by_upload = by_upload
            self._refreshed_at = started

    async def find(
        self, upload_pks: Iterable[str], *, refresh: bool = True, force: bool = False
    ) -> dict[str, Any] | None:
        """The session that took these uploads; when several did (a PATCH sent twice), the best outcome wins.
        ``force``: from a listing begun after this call (a session created since the last scan is in it), however
        recent the last one."""
        if refresh or force:
            await self._refresh(force=force)
        candidates = [s for pk in upload_pks for s in self._by_upload.get(pk, [])]
        if not candidates:
            return None
        rank = {SESSION_SUCCEEDED: 0, SESSION_FAILED: 2, SESSION_CANCELLED: 2}
        return min(candidates, key=lambda s: rank.get(str(s.get("status")), 1))


@dataclass(frozen=True)
class ItemSession:
    """The upload session of one image item: ``session`` to name in the PATCH (Queued), or what the recorded one
    shows: ``taken`` (an earlier PATCH named it: it runs or ran) or ``failed`` with the server's message."""

    session: dict[str, Any] | None = None
    taken: bool = False
    failed: str | None = None


class SessionsRefused(Exception):
    """The server refused to create an upload session (an older or different server): attach uploads directly."""


async def session_for_item(
    client: GrandChallengeClient, journal: Journal, item_id: int, upload_pks: list[str], *, case_title: str
) -> ItemSession:
    """The Queued session for this item's uploads, created and recorded (before any PATCH names it) unless the one
    recorded earlier is still usable; or what became of the recorded one."""
    recorded = await journal.read(journal.ledger.item_upload_session, item_id)
    if recorded:
        try:
            session = await client.get_upload_session(recorded)
        except NotFound:
            session = None
        if session is not None:
            status = session.get("status")
            if status in SESSION_ENDED_BADLY:
                return ItemSession(failed=session.get("error_message") or f"the import ended {status}")
            if status != SESSION_QUEUED:
                return ItemSession(taken=True)  # a PATCH before a crash named it: it runs or ran
            if set(session_upload_pks(session)) == set(upload_pks):
                return ItemSession(session=session)
    try:
        session = await client.create_upload_session([client.upload_url(pk) for pk in upload_pks])
    except ApiError as error:
        if error.status in (400, 403, 404, 405) and not _names_uploads(error):
            raise SessionsRefused(str(error)) from None
        if error.status == 400 and await any_upload_gone(client, upload_pks):  # swept after they were completed
            raise UploadsSwept(item_id, f"{case_title}: its uploads are gone ({error})") from None
        raise
    crash_point("after-session-created")
    await journal.record(step(journal.ledger.item_session_recorded, item_id, str(session["pk"])), case=case_title)
    return ItemSession(session=session)


async def any_upload_gone(client: GrandChallengeClient, upload_pks: tuple[str, ...] | list[str]) -> bool:
    """Whether the server no longer has one of these uploads (consumed by an import, or swept)."""
    for pk in upload_pks:
        try:
            await client.get_upload(pk)
        except NotFound:
            return True
    return False


def _names_uploads(error: ApiError) -> bool:
    """A 400 about the uploads themselves (e.g. one swept) is the item's problem, not a refusal of sessions."""
    return isinstance(error.body, dict) and "uploads" in error.body


async def failed_session_message(client: GrandChallengeClient, session_pk: str) -> str | None:
    """The server's reason when this item's own session ended Failed or Cancelled (docs/gc-api.md §10: whatever its
    upload list shows), else None. One ``GET cases/upload-sessions/{pk}/``, never a scan of the list."""
    try:
        session = await client.get_upload_session(session_pk)
    except NotFound:
        return None
    status = session.get("status")
    if status in SESSION_ENDED_BADLY:
        return session.get("error_message") or f"the import ended {status}"
    return None

"""The values PATCH of a display set, sent so that a lost answer can neither double an import nor fail a case that
the server completed (docs/gc-api.md §3, §10).

The PATCH is not idempotent: once the server took it, its uploads are consumed by the import (docs/gc-api.md §1), and the
same PATCH sent again answers 400 "Invalid hyperlink". So it is never retried blindly. After an answer that may hide
a success (a network error, a 5xx) or a 400 on the upload links, the display set and the uploads are looked at: a
value in place, or uploads consumed, means the server took that value; only what it did not take is sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio

from gcbulk.engine.gc.client import GrandChallengeClient, socket_slug_of
from gcbulk.engine.gc.errors import ApiError, NotFound, may_have_succeeded
from gcbulk.engine.gc.retry import RetryPolicy, current_budget
from gcbulk.engine.gc.targets import Target
from gcbulk.engine.upload.imports import SESSION_QUEUED, present_sockets
from gcbulk.state.records import ItemWork

log = logging.getLogger(__name__)

IMAGE, FILE, VALUE = "Image", "File", "Value"


def refers_to_image(item: ItemWork, kind: str) -> bool:
    """An image item planned with no files and the API URL of an image the server already has (``gcbulk copy``):
    it moves no bytes, its value is ``{"interface": …, "image": <url>}`` (docs/gc-api.md §12)."""
    return kind == IMAGE and item.has_value and not item.files


@dataclass(frozen=True)
class PlannedValue:
    """One socket value of the PATCH: ``body`` as sent; ``upload_pks`` the uploads it names (none for a value)."""

    socket_slug: str
    kind: str
    body: dict[str, Any]
    upload_pks: tuple[str, ...] = ()
    session_pk: str | None = None  # the upload session the PATCH names (docs/gc-api.md §10 path (a))
    # Sent as its own upload session aimed at the display set (``POST cases/upload-sessions/`` with ``display_set``
    # and ``interface``, docs/gc-api.md §10 path (b)), not in the PATCH: ``body`` is that POST's body.
    targeted: bool = False


class UploadsGoneBeforeAttach(ApiError):
    """The server refused the upload links and the display set does not hold the value: the uploads were removed
    (the 24 h sweep, docs/gc-api.md §1) before they were attached."""


class ImageNotShown(ApiError):
    """The server refused a value naming an existing image by its URL: no such image, or not one this user may view."""


def _refuses_upload_links(error: BaseException) -> bool:
    """docs/gc-api.md §0: a bad hyperlink is 400 ``{"values": [{"user_uploads": ["Invalid hyperlink …"]}]}`` or similar."""
    return isinstance(error, ApiError) and error.status == 400 and "hyperlink" in str(error.body).lower()


async def _taken(
    client: GrandChallengeClient,
    target: Target,
    pk: str,
    planned: Iterable[PlannedValue],
    kinds: dict[str, str],
    *,
    sent_before: bool,
) -> set[str]:
    """The sockets whose value the server took: in place in the display set, or (images and files, when an earlier
    PATCH may have reached the server) with their uploads consumed (404: deleted after the import or the file copy,
    docs/gc-api.md §1). Without such a PATCH, a missing upload was swept, not consumed."""
    display_set = await target.get(pk)
    present = present_sockets(display_set, kinds)
    values = {socket_slug_of(v): v.get("value") for v in display_set.get("values") or []}
    taken = set()
    for value in planned:
        if value.kind == VALUE:
            if value.socket_slug in values and values[value.socket_slug] == value.body.get("value"):
                taken.add(value.socket_slug)
            continue
        if value.socket_slug in present:
            taken.add(value.socket_slug)
            continue
        if value.session_pk is not None:
            # A session leaves Queued only when a PATCH named it: then this value was taken (docs/gc-api.md §2, §10).
            if (await client.get_upload_session(value.session_pk)).get("status") != SESSION_QUEUED:
                taken.add(value.socket_slug)
            continue
        if not sent_before or not value.upload_pks:  # a reference to an image is taken only when in place
            continue
        try:
            await client.get_upload(value.upload_pks[0])
        except NotFound:
            taken.add(value.socket_slug)
    return taken


async def send_values(
    client: GrandChallengeClient,
    target: Target,
    pk: str,
    planned: list[PlannedValue],
    kinds: dict[str, str],
    *,
    policy: RetryPolicy,
    what: str,
    between_images: Callable[[PlannedValue], Awaitable[None]] | None = None,
    post_targeted: Callable[[PlannedValue], Awaitable[None]] | None = None,
) -> None:
    """Puts ``planned`` into display set ``pk``: a PATCH of the values that are not ``targeted`` (retried until the
    server holds each of them, or took its uploads), and ``post_targeted(value)`` for each targeted image.

    ``between_images``: image values go one at a time (the first with every other value), and before each next one
    ``between_images(previous)`` is awaited — the case waits until the previous value is in place, so two values of
    one display set never link at once (docs/gc-api.md §10: the loser holds an import worker for up to 5 s).

    Raises the server's error when it refused the values, ``UploadsGoneBeforeAttach`` when their uploads vanished
    before the server took them, or the last error once the case's retry budget is spent."""
    images = [value for value in planned if value.kind == IMAGE]
    if between_images is None or len(images) < 2:
        groups = [planned]
    else:
        groups = [[value for value in planned if value.kind != IMAGE or value is images[0]]]
        groups += [[value] for value in images[1:]]
    previous: PlannedValue | None = None
    for group in groups:
        if previous is not None and between_images is not None:
            await between_images(previous)
        patched = [value for value in group if not value.targeted]
        if patched:
            await _send_together(client, target, pk, patched, kinds, policy=policy, what=what)
        for value in group:
            if value.targeted:
                assert post_targeted is not None, "a targeted value needs post_targeted"
                await post_targeted(value)
        previous = next((value for value in group if value.kind == IMAGE), None)


async def _send_together(
    client: GrandChallengeClient,
    target: Target,
    pk: str,
    planned: list[PlannedValue],
    kinds: dict[str, str],
    *,
    policy: RetryPolicy,
    what: str,
) -> None:
    pending = list(planned)
    budget = current_budget(policy, what)
    attempt = 0
    sent_before = False  # whether a PATCH of these values may have reached the server
    while pending:
        try:
            await target.update(pk, values=[v.body for v in pending], retries=False)
            return
        except Exception as error:  # cancellation is a BaseException and passes through
            refused_links = _refuses_upload_links(error)
            if not (may_have_succeeded(error) or refused_links or policy.get_delay(error, attempt) is not None):
                raise
            taken = await _taken(
                client, target, pk, pending, kinds, sent_before=sent_before or may_have_succeeded(error)
            )
            sent_before = sent_before or may_have_succeeded(error)
            if taken:
                log.info("%s: the server had taken %s despite its answer (%s)", what, ", ".join(sorted(taken)), error)
            pending = [v for v in pending if v.socket_slug not in taken]
            if not pending:
                return
            if refused_links and (named := [v.socket_slug for v in pending if not v.upload_pks and "image" in v.body]):
                assert isinstance(error, ApiError)
                # A copy's value names an existing image (docs/gc-api.md §12): refused, it is not an upload that is gone.
                raise ImageNotShown(
                    error.method,
                    error.url,
                    error.status,
                    f"the server refused the image named for {', '.join(named)}: it has no such image, or this user "
                    f"may not view it (view_image on the source's images is needed to copy them) ({error.body})",
                    error.headers,
                ) from None
            if refused_links:
                gone = ", ".join(v.socket_slug for v in pending)
                assert isinstance(error, ApiError)
                raise UploadsGoneBeforeAttach(
                    error.method,
                    error.url,
                    error.status,
                    f"the uploads of {gone} were removed by the server before they were attached (docs/gc-api.md §1: "
                    f"uploads are deleted 24 h after creation); run the job again to send them anew ({error.body})",
                    error.headers,
                ) from None
            budget.spend(error)
            delay = policy.get_delay(error, attempt) or policy.backoff(attempt)
            log.info("%s: sending the values not yet taken again in %.1f s after %s", what, delay, error)
            await anyio.sleep(delay)
            attempt += 1

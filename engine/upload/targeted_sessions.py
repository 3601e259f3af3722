"""An image value sent as an upload session aimed at its display set (docs/gc-api.md §2, §10 path (b)).

``POST cases/upload-sessions/`` with ``uploads``, ``display_set`` and ``interface`` starts the import at once: one
request per image, where a Queued session and a values PATCH naming it are two (§10 path (a)), and the PATCH is the
server's most expensive call (220 ms of a web worker). The session's pk comes back in the answer and is recorded, so
a failed import is still found with one ``GET cases/upload-sessions/{pk}/`` and a resumed run knows the value was
sent (a session that left Queued was taken, ``engine/upload/imports.py``).

The POST is not idempotent: after an answer that may hide a success the server is asked before it is sent again —
the display set (the image in its socket: done), else the session list by the uploads (the only scan of that list,
and only on that rare path), else, the uploads consumed by the import, the display set again until the image is
linked (``_session_of_lost_answer``).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from gcbulk.engine.gc.errors import ApiError, ImportFailed, NotFound, UploadsSwept
from gcbulk.engine.gc.retry import RetryPolicy
from gcbulk.engine.gc.targets import Target
from gcbulk.engine.upload.context import TransferContext
from gcbulk.engine.upload.crashpoints import crash_point
from gcbulk.engine.upload.imports import UploadSessionIndex, any_upload_gone, present_sockets
from gcbulk.engine.upload.server_limits import WaitVoice, wait_log
from gcbulk.engine.upload.values_patch import IMAGE, PlannedValue, send_values
from gcbulk.state.steps import step

log = logging.getLogger(__name__)
LINK_POLL_SECONDS = 0.5
# A targeted value's body names its container under this key (the target's own field name is sent: ``post_targeted``).
CONTAINER = "container"


def targeted_value(
    socket_slug: str, container_pk: str, upload_urls: list[str], upload_pks: tuple[str, ...]
) -> PlannedValue:
    """``body`` names the container under the key ``CONTAINER``; ``post_targeted`` sends it in the target's field."""
    body = {"uploads": upload_urls, CONTAINER: container_pk, "interface": socket_slug}
    return PlannedValue(socket_slug, IMAGE, body, upload_pks, targeted=True)


async def post_targeted(
    ctx: TransferContext,
    sessions: UploadSessionIndex,
    value: PlannedValue,
    item_id: int,
    *,
    case_title: str,
    policy: RetryPolicy,
) -> str | None:
    """Sends ``value`` as its own session into its display set and records the session's pk on the item.

    Returns the pk; None when the server refused such sessions and the uploads went in a values PATCH instead (said
    once per run; later values are planned that way from the start). Raises ``NotFound`` for the display set when
    the server says it does not have it (the case then makes a new one), and the server's error otherwise."""
    client = ctx.client
    target = ctx.target
    display_set = str(value.body[CONTAINER])

    async def made_before() -> dict[str, Any] | None:
        return await _session_of_lost_answer(
            client,
            target,
            sessions,
            value,
            display_set,
            case_title=case_title,
            link_wait_seconds=ctx.config.image_link_wait_seconds,
        )

    try:
        session = await client.create_targeted_upload_session(
            list(value.body["uploads"]),
            container={target.session_field: display_set},
            interface=value.socket_slug,
            reconcile=made_before,
        )
    except _ValueInPlace:
        # Sent and imported, its session unknown: nothing to record, the import wait finds the value in place.
        ctx.journal.note(
            "session_answer_lost_value_in_place", case=case_title, socket=value.socket_slug, display_set=display_set
        )
        return None
    except ApiError as error:
        names = error.body if isinstance(error.body, dict) else {}
        if error.status == 400 and "uploads" in names and await any_upload_gone(client, tuple(value.upload_pks)):
            # "Invalid hyperlink - Object does not exist": swept after they were completed; the case sends them again.
            raise UploadsSwept(item_id, f"{case_title}: {value.socket_slug}: its uploads are gone ({error})") from None
        if error.status not in (400, 403, 404, 405) or "uploads" in names:  # an upload's problem: the item's
            raise
        if target.session_field in names:  # "Invalid pk": gone from the server, or never visible to this user
            raise NotFound(
                error.method,
                client.url_for(target.container_path(display_set)),
                404,
                error.body,
                error.headers,
            ) from None
        await _attach_directly(ctx, value, display_set, str(error), policy=policy, what=f"{case_title}: values PATCH")
        return None
    pk = str(session["pk"])
    crash_point("after-session-created")  # a resume finds it by its uploads: it left Queued, so it was taken
    await ctx.journal.record(step(ctx.journal.ledger.item_session_recorded, item_id, pk), case=case_title)
    return pk


class _ValueInPlace(Exception):
    """The lost POST's image is in its socket already: the value is done, whichever session made it."""


async def _session_of_lost_answer(
    client: Any,
    target: Target,
    sessions: UploadSessionIndex,
    value: PlannedValue,
    display_set: str,
    *,
    case_title: str,
    link_wait_seconds: float,
) -> dict[str, Any] | None:
    """After a lost answer: the session the POST made, None when it made none (send it again), or ``_ValueInPlace``.

    A session lists its uploads only until its import consumes (deletes) them (docs/gc-api.md §10): found by them while
    the import runs, not after. Then the display set tells: the image in its socket is the value done; uploads gone
    with no image yet is the import still linking (moments), or failed. The session list is scanned once, from a
    listing begun now (the lost POST came after any earlier scan): it is the server's dearest list (§10)."""
    if await image_in_place(target, display_set, value.socket_slug):
        raise _ValueInPlace
    found = await sessions.find(value.upload_pks, force=True)
    if found is not None:
        return found
    if not await any_upload_gone(client, value.upload_pks):
        return None  # still there, and no session lists them: the POST made nothing
    if await image_linked_soon(
        target,
        display_set,
        value.socket_slug,
        who=f"{case_title} (its upload session's answer was lost)",
        wait_seconds=link_wait_seconds,
    ):
        raise _ValueInPlace
    raise ImportFailed(
        f"{case_title}: the upload session for {value.socket_slug} was created but its answer was lost, and its "
        f"uploads are gone without an image in display set {display_set} after {link_wait_seconds:.0f} s (the "
        "import failed, or the uploads expired); 'gcbulk retry-failed' uploads the files again"
    )


async def image_linked_soon(
    target: Target, display_set: str, socket_slug: str, *, who: str, wait_seconds: float
) -> bool:
    """Whether the image of a session whose uploads are gone shows in its socket within ``wait_seconds`` (the job's
    ``engine.image_link_wait_seconds``): the
    server links it moments after consuming the uploads (docs/gc-api.md §10), or never, if the import failed. Polls the
    display set (a cheap GET) and says what it waits for every ``VOICE_SECONDS``."""
    waited_since = anyio.current_time()
    voice = WaitVoice(
        waited_since,
        lambda so_far: wait_log.info(
            "%s waits %.0f s so far for the image of %s in display set %s (its uploads are consumed)",
            who,
            so_far,
            socket_slug,
            display_set,
        ),
    )
    while not await image_in_place(target, display_set, socket_slug):
        now = anyio.current_time()
        if now - waited_since > wait_seconds:
            return False
        voice.speak_if_due(now)
        await anyio.sleep(LINK_POLL_SECONDS)
    return True


async def image_in_place(target: Target, display_set: str, socket_slug: str) -> bool:
    """Whether the display set shows an image in ``socket_slug`` (False too when the display set is gone)."""
    try:
        shown = await target.get(display_set)
    except NotFound:
        return False
    return socket_slug in present_sockets(shown, {socket_slug: IMAGE})


async def _attach_directly(
    ctx: TransferContext, value: PlannedValue, display_set: str, refusal: str, *, policy: RetryPolicy, what: str
) -> None:
    """The server refused the session: the uploads go in the values PATCH (``user_uploads``), where the session the
    server makes is unknown and a failed import is found by scanning the session list."""
    if ctx.sessions_refused is None:
        ctx.sessions_refused = refusal
        log.warning(
            "the server refused to create an upload session (%s); attaching uploads directly instead: "
            "import failures are then found by scanning the session list",
            refusal,
        )
        ctx.journal.note("upload_sessions_refused", reason=refusal)
    body = {"interface": value.socket_slug, "user_uploads": list(value.body["uploads"])}
    direct = PlannedValue(value.socket_slug, IMAGE, body, value.upload_pks)
    await send_values(
        ctx.client, ctx.target, display_set, [direct], {value.socket_slug: IMAGE}, policy=policy, what=what
    )

"""An image value sent as an upload session aimed at its display set (contract §2, §10 path (b)).

``POST cases/upload-sessions/`` with ``uploads``, ``display_set`` and ``interface`` starts the import at once: one
request per image, where a Queued session and a values PATCH naming it are two (§10 path (a)), and the PATCH is the
server's most expensive call (220 ms of a web worker). The session's pk comes back in the answer and is recorded, so
a failed import is still found with one ``GET cases/upload-sessions/{pk}/`` and a resumed run knows the value was
sent (a session that left Queued was taken, ``engine/upload/imports.py``).

The POST is not idempotent: after an answer that may hide a success it is looked up in the session list (by its
uploads) before it is sent again — the only scan of that list, and only on that rare path.
"""

from __future__ import annotations

import logging
from typing import Any

from gcbulk.engine.gc.errors import ApiError, NotFound
from gcbulk.engine.gc.retry import RetryPolicy
from gcbulk.engine.upload.context import TransferContext
from gcbulk.engine.upload.crashpoints import crash_point
from gcbulk.engine.upload.imports import UploadSessionIndex
from gcbulk.engine.upload.values_patch import IMAGE, PlannedValue, send_values

log = logging.getLogger(__name__)


def targeted_value(socket_slug: str, display_set_pk: str, upload_urls: list[str],
                   upload_pks: tuple[str, ...]) -> PlannedValue:
    body = {"uploads": upload_urls, "display_set": display_set_pk, "interface": socket_slug}
    return PlannedValue(socket_slug, IMAGE, body, upload_pks, targeted=True)


async def post_targeted(ctx: TransferContext, sessions: UploadSessionIndex, value: PlannedValue, item_id: int,
                        *, case_title: str, policy: RetryPolicy) -> str | None:
    """Sends ``value`` as its own session into its display set and records the session's pk on the item.

    Returns the pk; None when the server refused such sessions and the uploads went in a values PATCH instead (said
    once per run; later values are planned that way from the start). Raises ``NotFound`` for the display set when
    the server says it does not have it (the case then makes a new one), and the server's error otherwise."""
    client = ctx.client
    display_set = str(value.body["display_set"])

    async def made_before() -> dict[str, Any] | None:
        return await sessions.find(value.upload_pks)

    try:
        session = await client.create_targeted_upload_session(
            list(value.body["uploads"]), display_set=display_set, interface=value.socket_slug, reconcile=made_before)
    except ApiError as error:
        names = error.body if isinstance(error.body, dict) else {}
        if error.status not in (400, 403, 404, 405) or "uploads" in names:  # an upload's problem: the item's
            raise
        if "display_set" in names:  # "Invalid pk": gone from the server, or never visible to this user
            raise NotFound(error.method, client.url_for(f"reader-studies/display-sets/{display_set}/"), 404,
                           error.body, error.headers) from None
        await _attach_directly(ctx, value, display_set, str(error), policy=policy, what=f"{case_title}: values PATCH")
        return None
    pk = str(session["pk"])
    crash_point("after-session-created")  # a resume finds it by its uploads: it left Queued, so it was taken
    await ctx.journal.record("item_session_recorded", item_id, pk, case=case_title)
    return pk


async def _attach_directly(ctx: TransferContext, value: PlannedValue, display_set: str, refusal: str,
                           *, policy: RetryPolicy, what: str) -> None:
    """The server refused the session: the uploads go in the values PATCH (``user_uploads``), where the session the
    server makes is unknown and a failed import is found by scanning the session list."""
    if ctx.sessions_refused is None:
        ctx.sessions_refused = refusal
        log.warning("the server refused to create an upload session (%s); attaching uploads directly instead: "
                    "import failures are then found by scanning the session list", refusal)
        ctx.journal.note("upload_sessions_refused", reason=refusal)
    body = {"interface": value.socket_slug, "user_uploads": list(value.body["uploads"])}
    direct = PlannedValue(value.socket_slug, IMAGE, body, value.upload_pks)
    await send_values(ctx.client, display_set, [direct], {value.socket_slug: IMAGE}, policy=policy, what=what)

"""``GET notifications/``: the only place a background failure of a JSON file value is reported (docs/gc-api.md §10).

The real serializer shows each notification's ``read`` flag and little else; the emulator adds ``message`` and
``created`` so that a user (and a test) can see *why* a value never appeared, which is what the server's web page shows.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gcbulk.emulator.context import Context, context_of
from gcbulk.emulator.http import current_user, iso, paginate
from gcbulk.emulator.store import Notification, User, new_uuid


def notify(context: Context, user: User, message: str) -> Notification:
    notification = Notification(pk=new_uuid(), user_pk=user.pk, created=context.clock.now(), message=message)
    context.store.notifications[notification.pk] = notification
    return notification


def _json(notification: Notification) -> dict[str, Any]:
    return {
        "pk": notification.pk,
        "read": notification.read,
        "message": notification.message,
        "created": iso(notification.created),
    }


async def list_notifications(request: web.Request) -> web.Response:
    user = current_user(request)
    notes = (
        [] if user is None else [n for n in context_of(request).store.notifications.values() if n.user_pk == user.pk]
    )
    notes.sort(key=lambda n: n.created, reverse=True)
    return paginate(request, notes, _json)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/notifications/", list_notifications)

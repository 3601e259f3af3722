"""The hourly cleanup of uploads (docs/gc-api.md §1): every UserUpload older than ``upload_timeout_seconds`` (24 h) goes,
whatever its status. An Initialized one loses its parts (its multipart upload is aborted), a Completed one its object.

The task runs every ``sweep_interval_seconds`` of the emulator's *clock*: it sleeps until the next run is due and
wakes early whenever the clock is advanced, so a test that jumps 25 h ahead sees the sweep run at once (and may
also run it directly through ``POST /_admin/sweep``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from datetime import timedelta

from aiohttp import web

from gcbulk.emulator.context import CONTEXT, Context
from gcbulk.emulator.uploads import delete_upload


def sweep_expired_uploads(context: Context) -> list[str]:
    """Deletes every upload created more than ``upload_timeout_seconds`` ago; returns their pks."""
    cutoff = context.clock.now() - timedelta(seconds=context.config.upload_timeout_seconds)
    expired = [upload for upload in context.store.uploads.values() if upload.created < cutoff]
    for upload in expired:
        delete_upload(context, upload)
    return [upload.pk for upload in expired]


async def run_sweeper(context: Context) -> None:
    """Runs the sweep whenever the clock passes the next due time; never returns (cancel it)."""
    interval = context.config.sweep_interval_seconds
    woken = asyncio.Event()
    loop = asyncio.get_running_loop()
    unsubscribe = context.clock.on_advance(lambda: loop.call_soon_threadsafe(woken.set))
    due = context.clock.timestamp() + interval
    try:
        while True:
            remaining = due - context.clock.timestamp()
            if remaining <= 0:
                sweep_expired_uploads(context)
                # Missed runs collapse into one, as they would on a server that was paused: the result is the same.
                while due <= context.clock.timestamp():
                    due += interval
                continue
            woken.clear()
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=remaining)
    finally:
        unsubscribe()


async def _sweeper_lifetime(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(run_sweeper(app[CONTEXT]), name="upload sweep")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_sweeper_lifetime)

"""``--data-dir`` as a persistence mode: the emulator's state survives a restart (uploads, sessions, display sets,
images, answers, open multipart uploads, the URL-signing secret). The CA is kept by ``tls.generate_tls_files``.

The state is one pickle written atomically (temporary file, then rename) every ``SAVE_INTERVAL_SECONDS`` while it
changes and on shutdown; the bytes are already on disk under the data dir. Pickle is acceptable here: the file is
written and read only by the emulator itself, in the user's own data directory. Without ``--data-dir`` the emulator
runs in memory in a temporary directory, which tests of state loss use.
"""

from __future__ import annotations

import asyncio
import os
import pickle
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from aiohttp import web

from gcbulk.emulator import importer
from gcbulk.emulator.context import CONTEXT, Context
from gcbulk.emulator.store import SESSION_REQUEUED

STATE_FILE = "emulator-state.pickle"
SAVE_INTERVAL_SECONDS = 1.0
FORMAT = 2  # 2: the store holds archives and archive items (docs/gc-api.md §12)


def state_path(context: Context) -> Path:
    return context.config.data_dir / STATE_FILE


def save_state(context: Context) -> None:
    """Writes the state atomically: a crash mid-write leaves the previous state whole."""
    state: dict[str, Any] = {
        "format": FORMAT,
        "store": context.store,
        "multipart_uploads": context.objects.multipart_uploads,
        "signer": context.signer,
    }
    path = state_path(context)
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as handle:
        pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_state(context: Context) -> bool:
    """Restores a saved state into ``context``; False when there is none. Raises ValueError for an unreadable file."""
    path = state_path(context)
    if not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            state = pickle.load(handle)  # noqa: S301 - our own file in the user's data dir (module docstring)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ValueError(f"{path} is not a readable emulator state ({error}); move it away to start afresh") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} was written by another emulator version; move it away to start afresh")
    context.store = state["store"]
    context.objects.multipart_uploads = state["multipart_uploads"]
    signer = state["signer"]
    signer._clock = context.clock  # noqa: SLF001 - the clock is this run's; the secret is what must survive
    context.signer = signer
    return True


async def _saver(context: Context) -> None:
    while True:
        await asyncio.sleep(SAVE_INTERVAL_SECONDS)
        save_state(context)  # on the loop thread: handlers mutate the store there, so the snapshot is consistent


async def _persistence_lifetime(app: web.Application) -> AsyncIterator[None]:
    context = app[CONTEXT]
    # Imports that were scheduled or running when the emulator stopped run again, as Celery's queue would.
    worker = importer.install(app)
    for session in list(context.store.upload_sessions.values()):
        if session.status == SESSION_REQUEUED:
            worker.schedule_session(session)
    task = asyncio.create_task(_saver(context), name="state saver")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    save_state(context)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_persistence_lifetime)

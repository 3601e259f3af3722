"""Step 4 of a case (``gcbulk.engine.upload.case_upload``): waiting until Grand Challenge has imported its values.

Each image value is followed by its own upload session and by the display set (contract §10): a session that ends
Failed fails its value with the server's message, a value in place is done, and the wait has a deadline and says
what it waits for. Mixed into ``CaseUpload``, whose state (``ctx``, ``case``, ``import_units``) it uses.
"""

from __future__ import annotations

import logging
import time

import anyio

from gcbulk.engine.gc.errors import Interrupted
from gcbulk.engine.upload.crashpoints import crash_point
from gcbulk.engine.upload.dicom_image_set import is_image_set, timeout_reason
from gcbulk.engine.upload.imports import (
    SESSION_ENDED_BADLY,
    failed_session_message,
    present_sockets,
)
from gcbulk.engine.upload.server_limits import VOICE_SECONDS, wait_log
from gcbulk.engine.upload.values_patch import FILE, IMAGE
from gcbulk.state.records import ItemWork

log = logging.getLogger(__name__)


class ImportWait:
    """The import wait of one case; needs ``ctx``, ``case``, ``sessions``, ``import_units``, ``_record``,
    ``_mark_importing`` and ``_finish`` from ``CaseUpload``."""

    async def _await_imports(self, pk: str, kinds: dict[str, str]) -> bool:
        ctx = self.ctx
        await self._mark_importing()
        waiting = [i for i in self.case.items if i.state == "attached"]
        images_waiting = sum(1 for i in waiting if kinds[i.socket_slug] == IMAGE)
        # Resumed with imports in flight from an earlier run. A case already holding the whole limit (imports_in_flight
        # below its image count) does not ask for more: it would wait for itself.
        if images_waiting > self.import_units and self.import_units < ctx.import_gate.ceiling:
            self.import_units += await ctx.import_gate.acquire(images_waiting - self.import_units,
                                                               who=self.case.title)
        started = time.monotonic()
        deadline = started + ctx.config.import_timeout_seconds
        next_voice = started + VOICE_SECONDS
        delay = ctx.config.poll_initial_seconds
        polls = 0
        while waiting:
            present = present_sockets(await ctx.client.get_display_set(pk), kinds)
            still = []
            for item in waiting:
                if item.socket_slug in present:
                    await self._record("item_done", item.id)
                    await self._item_finished(item, kinds, consumed=True)
                else:
                    still.append(item)
            waiting = still
            if not waiting:
                break
            if polls >= 1:
                waiting = await self._drop_failed_imports(waiting, kinds)
            if waiting and time.monotonic() > deadline:
                for item in waiting:
                    reason = (f"{item.socket_slug}: the import did not finish within "
                              f"{ctx.config.import_timeout_seconds:.0f} s")
                    if await is_image_set(ctx, item.socket_slug, kinds[item.socket_slug]):
                        reason = timeout_reason(item, ctx, ctx.config.import_timeout_seconds)
                    await self._record("item_failed", item.id, reason=reason)
                    await self._item_finished(item, kinds, consumed=False)
                break
            if ctx.stopping.is_set():
                raise Interrupted(f"{self.case.title}: stopped while waiting for imports")
            if time.monotonic() >= next_voice:  # no wait without a voice
                wait_log.info("%s waits %.0f s so far for the import of %s (gives up after %.0f s)", self.case.title,
                              time.monotonic() - started, ", ".join(i.socket_slug for i in waiting),
                              ctx.config.import_timeout_seconds)
                next_voice = time.monotonic() + VOICE_SECONDS
            crash_point("during-import-poll")
            with anyio.move_on_after(delay):  # a stop ends the wait at once: the next pass resumes the polling
                await ctx.stopping.wait()
            delay = min(delay * 1.5, ctx.config.poll_max_seconds)
            polls += 1
        return await self._finish()

    async def _drop_failed_imports(self, waiting: list[ItemWork], kinds: dict[str, str]) -> list[ItemWork]:
        still = []
        for item in waiting:
            message = None
            if kinds[item.socket_slug] == IMAGE and not await is_image_set(self.ctx, item.socket_slug):
                session_pk = await self.ctx.journal.read("item_upload_session", item.id)
                if session_pk:  # its own session: one GET, never a scan of the list (contract §10)
                    message = await failed_session_message(self.ctx.client, session_pk)
                else:  # attached directly (an older gcbulk, or a server that refused sessions)
                    session = await self.sessions.find(await self.ctx.journal.read("item_upload_pks", item.id))
                    if session is not None and session.get("status") in SESSION_ENDED_BADLY:
                        message = session.get("error_message") or f"the import ended {session.get('status')}"
            if message is not None:
                await self._record("item_failed", item.id, reason=f"{item.socket_slug}: {message}")
                await self._item_finished(item, kinds, consumed=False)
            else:
                still.append(item)
        return still

    async def _item_finished(self, item: ItemWork, kinds: dict[str, str], *, consumed: bool) -> None:
        kind = kinds[item.socket_slug]
        if kind == IMAGE and self.import_units:
            self.import_units -= 1
            await self.ctx.import_gate.release(1)
        # Contract §1: a successful import deletes its uploads; a failed one leaves them to the 24 h sweep.
        if consumed and kind in (IMAGE, FILE):
            await self.ctx.upload_gate.release(len(item.files))


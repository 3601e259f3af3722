"""Step 1 of a case (``gcbulk.engine.upload.case_upload``): uploading the files of its image and file sockets, all
concurrently, each through ``gcbulk.engine.upload.file_upload.FileUpload``. One ``CaseFiles`` per ``CaseUpload``:
it holds the de-identified copies it staged and reads the case and its context through the properties below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import anyio

from gcbulk.engine.gc.errors import Disposition, Interrupted, classify, first_error
from gcbulk.engine.upload.case_in_flight import CaseInFlight
from gcbulk.engine.upload.dicom_image_set import stage_image_sets
from gcbulk.engine.upload.file_upload import FileUpload
from gcbulk.engine.upload.server_limits import UnitPool
from gcbulk.engine.upload.values_patch import FILE, IMAGE, refers_to_image
from gcbulk.state.records import CaseWork, FileWork, ItemWork
from gcbulk.state.steps import Step, step

if TYPE_CHECKING:
    from gcbulk.engine.upload.context import TransferContext

P = ParamSpec("P")
T = TypeVar("T")


def _misfit(item: ItemWork, kind: str) -> bool:
    """A file socket takes exactly one file: an item planned with another number fails (``_upload_item``)."""
    return kind == FILE and len(item.files) != 1


class CaseFiles:
    """The uploads of one case (``CaseInFlight``: the ``CaseUpload`` it reads its case and context from)."""

    def __init__(self, upload: CaseInFlight) -> None:
        self._upload = upload
        self._staged: dict[int, FileWork] = {}  # file id → its de-identified copy (DICOM Image Sets), sent instead

    # What it uses of its case (``CaseInFlight``), named here.
    @property
    def ctx(self) -> TransferContext:
        return self._upload.ctx

    @property
    def case(self) -> CaseWork:
        return self._upload.case

    async def _record(self, transition: Callable[P, T], *args: P.args, **fields: P.kwargs) -> T:
        return await self._upload.record(transition, *args, **fields)

    async def _record_together(self, steps: list[Step[bool]]) -> list[bool]:
        return await self._upload.record_together(steps)

    def _stop_point(self, where: str) -> None:
        self._upload.stop_point(where)

    async def upload(self, kinds: dict[str, str]) -> None:
        """Uploads the files of the case's image and file sockets that are not uploaded yet, all concurrently."""
        work = [
            i
            for i in self.case.items
            if kinds[i.socket_slug] in (IMAGE, FILE)
            and i.state in ("planned", "uploading", "uploaded")
            and not refers_to_image(i, kinds[i.socket_slug])  # nothing to upload: the server has the image
        ]
        if not work:
            return
        self._stop_point("before its uploads")
        self._staged = await stage_image_sets(self._upload, work)
        # The case was read after its lease was taken (and after every change since): each file's live upload is in
        # it — unless staging DICOM copies just gave some up (then the ledger is asked).
        fresh = 0
        for item in work:
            for file in item.files:
                if self._staged:
                    uploads = await self.ctx.journal.read(self.ctx.journal.ledger.uploads_of_file, file.id)
                    fresh += not any(u.state in ("creating", "initialized", "completed") for u in uploads)
                else:
                    fresh += file.upload is None
        # The case takes the live-upload units of all its new files at once: its files then never hold slots that
        # its other files wait for, and a case with more files than the ceiling is admitted alone.
        pool = UnitPool(await self.ctx.upload_gate.acquire(fresh, who=self.case.title) if fresh else 0)
        interrupted: list[Interrupted] = []
        try:
            # The items that start now are marked uploading in one transaction: a crash leaves them all planned or
            # all uploading, and each is resumed from either, as before.
            starting = {i.id for i in work if i.state == "planned" and not _misfit(i, kinds[i.socket_slug])}
            if starting:
                await self._record_together(
                    [step(self.ctx.journal.ledger.item_uploading, item_id) for item_id in sorted(starting)]
                )
                work = [replace(i, state="uploading") if i.id in starting else i for i in work]
            async with anyio.create_task_group() as group:
                for item in work:
                    group.start_soon(self._upload_item, item, kinds[item.socket_slug], interrupted, pool)
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        finally:
            self.ctx.upload_gate.release_nowait(pool.left)  # units for files that never created an upload
            pool.left = 0
        if interrupted:
            raise interrupted[0]
        # No refresh here: the next step (_ensure_display_set) reads the case first.

    async def _upload_item(self, item: ItemWork, kind: str, interrupted: list[Interrupted], pool: UnitPool) -> None:
        """Uploads an item's files. A stop (Interrupted) is collected, not raised, so it does not cancel the parts
        that sibling files still have on the wire: the drain lets those finish."""
        if _misfit(item, kind):
            reason = f"socket {item.socket_slug} takes exactly one file, the plan has {len(item.files)}"
            await self._record(self.ctx.journal.ledger.item_failed, item.id, reason=reason)
            raise ValueError(reason)
        if item.state == "planned":
            await self._record(self.ctx.journal.ledger.item_uploading, item.id)
        stopped: list[Interrupted] = []
        # An item of one file is recorded uploaded with that file's upload completed, in one transaction.
        alone = [step(self.ctx.journal.ledger.item_uploaded, item.id)] if len(item.files) == 1 else []
        uploads: list[FileUpload] = []
        try:
            async with anyio.create_task_group() as group:
                for file in item.files:
                    group.start_soon(self._upload_file, file, stopped, pool, uploads, alone)
        except BaseException as raised:
            error = first_error(raised)
            if classify(error) not in (Disposition.INTERRUPTED, Disposition.STOP_RUN):
                await self._record(self.ctx.journal.ledger.item_failed, item.id, reason=f"{item.socket_slug}: {error}")
                self.ctx.stats.files_failed += 1
            raise error from None
        if stopped:
            interrupted.append(stopped[0])
            return
        if not (alone and uploads[0].completion_recorded):
            await self._record(self.ctx.journal.ledger.item_uploaded, item.id)

    async def _upload_file(
        self,
        file: FileWork,
        stopped: list[Interrupted],
        pool: UnitPool,
        uploads: list[FileUpload],
        with_completion: list[Step[bool]],
    ) -> None:
        try:
            staged = self._staged.get(file.id)
            # Without staging, ``file.upload`` is the ledger's live upload of the file (see _upload_items).
            upload = FileUpload(
                self.ctx,
                staged or file,
                self.case.title,
                pool,
                staged_copy=staged is not None,
                upload_known=not self._staged,
                with_completion=with_completion,
            )
            uploads.append(upload)
            await upload.run()
        except Interrupted as stop:
            stopped.append(stop)
            return
        self.ctx.stats.files_done += 1

"""DICOM Image Set values (docs/gc-api.md §10): the files de-identified into a staging folder first, then sent as
``user_uploads`` plus an ``image_name``. Hooked into ``CaseUpload`` (``engine/upload/case_upload.py``) at four points:
staging before the uploads, the value's body in the values PATCH, and the staging's release when the case ends.

* **De-identification** with Grand Challenge's own de-identifier (``engine/dicom/deidentify.py``), the procedure the
  server applies again; CPU-bound, so in a process pool sized to the cores. ``[dicom] deidentify = false`` sends the
  files as they are (only for data that is already de-identified).
* **Staging on disk, resumably**: each staged file's size and SHA-256 and its source's size and mtime go into the
  ledger (``gcbulk.state.dicom_staging``); a resume that finds them, the files in place and the sources unchanged
  de-identifies nothing again. A source changed since the plan fails the item with what to do.
* **A disk budget** (``[dicom] staging_budget``): a case takes the bytes of its sets before staging and gives them
  back when it ends; a wait for room says so at INFO and has a deadline.
* **No upload session** exists for such a value, and a refusal shows nowhere (docs/gc-api.md §10): completion is the value
  in the display set. The server deletes the uploads when the import ends, worked or not (§11): uploads gone and
  no value a little later is a refusal, failed at once with what is known (``refused_reason``); an import that
  never ends fails at its deadline with what was checked before sending (``timeout_reason``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from gcbulk.engine.dicom.deidentify import StagedSet, StagingError, release, stage_set
from gcbulk.engine.dicom.headers import DicomHeader, read_header
from gcbulk.engine.dicom.options import DicomOptions, render_image_name
from gcbulk.engine.gc.errors import SourceFileChanged
from gcbulk.engine.upload.case_in_flight import CaseInFlight
from gcbulk.engine.upload.context import TransferContext
from gcbulk.engine.upload.crashpoints import crash_point
from gcbulk.engine.upload.dicom_budget import DicomRunState
from gcbulk.engine.upload.file_upload import FileUpload
from gcbulk.engine.upload.server_limits import VOICE_SECONDS, CountingGate, wait_log
from gcbulk.state import dicom_staging
from gcbulk.state.records import FileWork, ItemWork

log = logging.getLogger(__name__)

KIND = "DICOM Image Set"


class DicomItemFailed(Exception):
    """A DICOM Image Set value cannot be sent; the message names the file and what to do."""


def _state(ctx: TransferContext) -> DicomRunState:
    if ctx.dicom_image_sets is None:
        ctx.dicom_image_sets = DicomRunState(ctx.config.dicom, wait_timeout=ctx.config.limit_wait_timeout_seconds)
    return ctx.dicom_image_sets


async def is_image_set(ctx: TransferContext, socket_slug: str, super_kind: str | None = None) -> bool:
    """Whether the socket is of kind "DICOM Image Set" (the client caches the socket); only an Image socket (or one
    of a kind not known yet) is asked about."""
    if super_kind not in (None, "Image"):
        return False
    socket = await ctx.client.get_socket(socket_slug)
    return socket is not None and socket.get("kind") == KIND


def _key(item: ItemWork) -> str:
    return _key_of(item.id)


def _key_of(item_id: int) -> str:
    return f"item-{item_id}"


def _staging_root(options: DicomOptions) -> Path:
    return options.staging or Path("gcbulk.dicom-staging").absolute()


def _source_unchanged(file: FileWork) -> None:
    """The planned file must still be what was planned (as ``file_upload.check_unchanged``), named for DICOM."""
    try:
        stat = os.stat(file.path)
    except OSError as exc:
        raise SourceFileChanged(
            f"{file.path}: cannot read it any more ({exc.strerror}); restore it or run 'gcbulk plan' again"
        ) from None
    if (stat.st_size, stat.st_mtime_ns) != (file.size, file.mtime_ns):
        raise SourceFileChanged(
            f"{file.path} changed since it was planned; run 'gcbulk plan' again to pick up the "
            "new content (it is de-identified again then)"
        )


def _staged_files(item: ItemWork, rows: dict[int, dicom_staging.StagedRow]) -> dict[int, FileWork] | None:
    """The item's files as staged before, when every staged copy is in place and every source as it was."""
    if set(rows) != {f.id for f in item.files}:
        return None
    staged = {}
    for index, file in enumerate(item.files):
        row = rows[file.id]
        try:
            stat = os.stat(row.staged_path)
        except OSError:
            return None
        if stat.st_size != row.size or (row.source_size, row.source_mtime_ns) != (file.size, file.mtime_ns):
            return None
        staged[file.id] = replace(
            file,
            path=Path(row.staged_path),
            name=f"dicom_image_{index}.dcm",
            size=row.size,
            mtime_ns=stat.st_mtime_ns,
            checksum=row.sha256,
        )
    return staged


def _intact(item: ItemWork, staged: dict[int, FileWork]) -> bool:
    """Whether the staged copies still to be sent hold the bytes recorded (SHA-256): a copy changed on disk is
    staged again rather than sent. Hashing costs a read; de-identifying again would cost far more."""
    for file in item.files:
        if file.upload is not None and file.upload.state == "completed":
            continue
        copy = staged[file.id]
        digest = hashlib.sha256()
        with open(copy.path, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
        if digest.hexdigest() != copy.checksum:
            log.info(
                "%s: its de-identified copy %s changed on disk; the set is de-identified again",
                file.relative_path,
                copy.path,
            )
            return False
    return True


async def stage_image_sets(upload: CaseInFlight, work: list[ItemWork]) -> dict[int, FileWork]:
    """De-identifies the DICOM Image Set items of ``work`` (reusing what is staged); returns file id → the staged
    copy to upload instead. Raises ``SourceFileChanged`` or ``DicomItemFailed`` (the item is recorded failed)."""
    ctx = upload.ctx
    items = [i for i in work if await is_image_set(ctx, i.socket_slug, i.super_kind)]
    if not items or not ctx.config.dicom.deidentify:
        return {}
    state = _state(ctx)
    runner = ctx.journal.runner
    result: dict[int, FileWork] = {}
    todo: list[ItemWork] = []
    for item in items:
        staged = _staged_files(item, await runner.with_ledger(dicom_staging.staged_of_item, item.id))
        if staged is not None and not await anyio.to_thread.run_sync(_intact, item, staged):
            staged = None
        if staged is None:
            todo.append(item)
        else:
            result.update(staged)
    held = sum(f.size for f in result.values()) + sum(f.size for i in todo for f in i.files)
    if held and upload.case.id not in state.held:
        state.held[upload.case.id] = await _take_budget(ctx, state.budget, held, upload.case.title)
    for item in todo:
        result.update(await _stage_item(upload, item, state))
    return result


async def _take_budget(ctx: TransferContext, gate: CountingGate, units: int, who: str) -> int:
    async with anyio.create_task_group() as group:

        async def stop_with_run() -> None:
            await ctx.stopping.wait()
            gate.stop()  # the run stops: a case waiting for room starts nothing new

        group.start_soon(stop_with_run)
        try:
            taken = await gate.acquire(units, who=who)
        finally:
            group.cancel_scope.cancel()
    return taken


async def _stage_item(upload: CaseInFlight, item: ItemWork, state: DicomRunState) -> dict[int, FileWork]:
    ctx = upload.ctx
    try:
        for file in item.files:
            _source_unchanged(file)
        await _drop_uploads_of_earlier_staging(upload, item)
        sources = [str(f.path) for f in item.files]
        log.info("%s: de-identifying %d DICOM files for %s", upload.case.title, len(sources), item.socket_slug)
        running = asyncio.get_running_loop().run_in_executor(
            state.executor(), stage_set, _key(item), sources, _staging_root(state.options)
        )
        crash_point("during-dicom-staging")
        try:
            staged: StagedSet = await _waited(running, upload.case.title, item, ctx.config.limit_wait_timeout_seconds)
        except StagingError as error:
            raise DicomItemFailed(
                f"{error}; remove the file from the case folder and run 'gcbulk plan' again"
            ) from None
    except (SourceFileChanged, DicomItemFailed) as error:
        await upload.record(upload.ctx.journal.ledger.item_failed, item.id, reason=f"{item.socket_slug}: {error}")
        raise
    rows = [
        {
            "file_id": f.id,
            "source_size": s.source_size,
            "source_mtime_ns": s.source_mtime_ns,
            "staged_path": str(staged.folder / s.staged),
            "size": s.size,
            "sha256": s.sha256,
        }
        for f, s in zip(item.files, staged.files, strict=True)
    ]
    await ctx.journal.runner.with_ledger(
        dicom_staging.record_staged, item.id, rows, case_id=upload.case.id, reused=staged.reused
    )
    staged_files = _staged_files(item, await ctx.journal.runner.with_ledger(dicom_staging.staged_of_item, item.id))
    assert staged_files is not None, "staged files vanished while being recorded"
    crash_point("after-dicom-staged")
    return staged_files


async def _waited(running: asyncio.Future[StagedSet], title: str, item: ItemWork, deadline: float) -> StagedSet:
    """The staged set, saying every few seconds that it is still being made; past ``deadline`` the item fails."""
    started = time.monotonic()
    while True:
        step = min(VOICE_SECONDS, max(deadline - (time.monotonic() - started), 0.001))
        try:
            return await asyncio.wait_for(asyncio.shield(running), step)
        except TimeoutError:
            waited = time.monotonic() - started
            if waited >= deadline:
                running.cancel()  # a set not started yet is dropped; one in a worker finishes into .partial
                raise DicomItemFailed(
                    f"de-identifying its {len(item.files)} files took more than {deadline:.0f} s; "
                    "run again (staged sets are kept) or lower the load on this machine"
                ) from None
            wait_log.info(
                "%s waits %.0f s so far for the de-identification of %d DICOM files for %s (gives up after %.0f s)",
                title,
                waited,
                len(item.files),
                item.socket_slug,
                deadline,
            )


async def _drop_uploads_of_earlier_staging(upload: CaseInFlight, item: ItemWork) -> None:
    """A set staged again (a source changed and was re-planned, or the staging folder was emptied) gets new UIDs
    from its new de-identifier, which files uploaded from the earlier staging do not share; the server would refuse
    the mix as two series, silently. So every upload of the earlier staging is given up and the set is sent anew."""
    reason = "its DICOM image set was de-identified again (new UIDs): the whole set is sent anew"
    for file in item.files:
        if file.upload is None or file.upload.state == "creating":
            continue  # an unconfirmed create: FileUpload abandons it
        if file.upload.state == "initialized":
            await FileUpload(upload.ctx, file, upload.case.title).abort(reason)
        else:
            await upload.record(upload.ctx.journal.ledger.upload_expired, file.upload.id, reason=reason)
        log.info("%s: %s: %s", upload.case.title, file.relative_path, reason)


async def image_set_value(upload: CaseInFlight, item: ItemWork, urls: list[str]) -> dict[str, Any]:
    """The PATCH body of a DICOM Image Set value: the uploads and the image name the job's template gives."""
    header = read_header(str(item.files[0].path))
    if not isinstance(header, DicomHeader):
        raise DicomItemFailed(f"{item.socket_slug}: {item.files[0].path} is no longer readable DICOM ({header.reason})")
    options: DicomOptions = upload.ctx.config.dicom
    template = options.image_name_template(item.socket_slug)
    name = render_image_name(template, header, socket=item.socket_slug, title=upload.case.title)
    if not name:
        raise DicomItemFailed(
            f"{item.socket_slug}: image_name {template!r} comes out empty for this series; change it "
            "in the job's rule and run 'gcbulk plan' again"
        )
    return {"interface": item.socket_slug, "user_uploads": urls, "image_name": name}


def timeout_reason(item: ItemWork, ctx: TransferContext, seconds: float) -> str:
    """Why a DICOM Image Set value failed when the server said nothing: what gcbulk had checked before sending."""
    return (
        f"{item.socket_slug}: the DICOM Image Set did not appear in the display set within {seconds:.0f} s, and "
        f"Grand Challenge shows no reason for a refused image set (docs/gc-api.md §10). {_checked(item, ctx)}"
    )


def refused_reason(item: ItemWork, ctx: Any, seconds: float) -> str:
    """Why a DICOM Image Set value failed once its import ended without the value: what is known, and what gcbulk
    had checked before sending."""
    return (
        f"{item.socket_slug}: Grand Challenge refused the DICOM Image Set: its import ended (the server deleted the "
        f"uploads, which it does when the import ends, whether it worked or not) and the value was still not in the "
        f"display set {seconds:.0f} s later. The server keeps the reason where no API shows it (docs/gc-api.md §11). "
        f"{_checked(item, ctx)}"
    )


def _checked(item: ItemWork, ctx: Any) -> str:
    options: DicomOptions = ctx.config.dicom
    deidentified = (
        "de-identified locally with grand-challenge-dicom-de-identifier (the server's own procedure)"
        if options.deidentify
        else "sent as they are ([dicom] deidentify = false)"
    )
    return (
        f"Checked before sending: its {len(item.files)} files are one series of one study of one patient, every "
        f"SOP class is one the de-identification procedure keeps, the image name is not empty, and the files were "
        f"{deidentified}. Look at the image set on Grand Challenge, or ask its admins for the import's log"
    )


async def release_staging_left_behind(ctx: TransferContext) -> None:
    """At the start of a run: the staged copies of items Grand Challenge already holds are deleted. A case records
    its end before its ``finally`` releases them, so a kill -9 in between leaves them on disk, and a done case is
    never touched again (found by the crash test ``after-values-patch:2``)."""
    items = await ctx.journal.runner.with_ledger(dicom_staging.staged_items_on_the_server)
    if not items:
        return
    root = _staging_root(ctx.config.dicom)
    for item_id in items:
        await anyio.to_thread.run_sync(release, root, _key_of(item_id))
        await ctx.journal.runner.with_ledger(dicom_staging.forget_staged, item_id)
    log.info("deleted the staged DICOM copies of %d item(s) Grand Challenge already holds", len(items))


async def release_case(upload: CaseInFlight) -> None:
    """The case ended (done, failed or stopped): its budget is given back; the staged copies of items Grand
    Challenge holds (attached or done) are deleted, those still to send are kept for the next run."""
    ctx = upload.ctx
    state = ctx.dicom_image_sets
    if state is None:
        return
    units = state.held.pop(upload.case.id, 0)
    if units:
        state.budget.release_nowait(units)
    case = await ctx.journal.read(ctx.journal.ledger.case_work, upload.case.id)
    for item in case.items:
        if item.state in ("attached", "done"):
            rows = await ctx.journal.runner.with_ledger(dicom_staging.staged_of_item, item.id)
            if rows:
                await anyio.to_thread.run_sync(release, _staging_root(state.options), _key(item))
                await ctx.journal.runner.with_ledger(dicom_staging.forget_staged, item.id)

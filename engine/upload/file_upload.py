"""One file → one completed Grand Challenge upload, resumable at part level (docs/gc-api.md §1).

The order of writes is what makes a crash anywhere harmless:
1. ledger ``upload creating`` (intent), then ``POST uploads/``, then ledger ``initialized`` with pk and s3_upload_id —
   before any part. An upload the ledger knows of is never lost; one created but not recorded (a crash between the
   two) is an empty orphan the server sweeps after 24 h.
2. each part: read in a thread, PUT, then ledger ``part sent`` with its ETag (S3's MD5 of the bytes it stored). A part
   on S3 but not in the ledger is found by list-parts on resume and kept if its ETag is our MD5 of those bytes.
3. the parts' ETags must compose into the plan's checksum (the bytes S3 holds are the bytes planned); complete with
   the ledger's sorted part list, then ledger ``completed``.

Resume: list-parts; keep parts whose size and ETag match, presign and send only the others. A vanished upload (404,
the 24 h sweep) is replaced by a new one; a completed upload not yet consumed is reused while young enough.
An upload is aborted only when the file itself makes it hopeless (it changed); never on interruption.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

import anyio

from gcbulk.engine.gc.errors import (
    ApiError,
    Interrupted,
    MultipartUploadVanished,
    NotFound,
    PartIntegrityError,
    SourceFileChanged,
    UploadNoLongerOpen,
    first_error,
    may_have_succeeded,
)
from gcbulk.engine.gc.retry import RetryBudget, item_budget
from gcbulk.engine.gc.uploads_api import UPLOAD_COMPLETED, UploadRef, parse_server_time
from gcbulk.engine.plan.parts import adjust_part_size
from gcbulk.engine.upload.claim_pacing import uploads_under_way
from gcbulk.engine.upload.context import TransferContext
from gcbulk.engine.upload.crashpoints import crash_point
from gcbulk.engine.upload.s3_parts import (
    PartSpec,
    PresignedUrls,
    md5_of_etag,
    part_md5,
    part_specs,
    read_part,
    upload_part,
)
from gcbulk.engine.upload.server_limits import UnitPool
from gcbulk.engine.upload.stored_bytes import parts_not_as_planned
from gcbulk.state.dicom_staging import fit_upload
from gcbulk.state.errors import LedgerError
from gcbulk.state.records import FileWork, UploadRow
from gcbulk.state.steps import Step, step

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)

# A file whose upload vanished (the sweep) more often than this in one run is failed rather than restarted forever.
MAX_UPLOAD_RESTARTS = 3


def check_unchanged(file: FileWork) -> None:
    """The file must still be what was planned: its size and mtime (re-plan to pick up changes)."""
    try:
        stat = os.stat(file.path)
    except OSError as exc:
        raise SourceFileChanged(
            f"{file.path}: cannot read it any more ({exc.strerror}); restore it or re-plan"
        ) from None
    if stat.st_size != file.size or stat.st_mtime_ns != file.mtime_ns:
        raise SourceFileChanged(
            f"{file.path} changed since it was planned (size {file.size} → {stat.st_size}); run 'gcbulk plan' again "
            "to pick up the new content"
        )


def _age_seconds(iso_time: str | None) -> float | None:
    moment = parse_server_time(iso_time)
    return None if moment is None else (datetime.now(UTC) - moment).total_seconds()


def _server_ref(upload: UploadRow) -> UploadRef:
    """The server's names of an upload the ledger recorded as created (its pk and S3 upload id are written together,
    ``state/transitions.py``); one without them is a ledger this code did not write."""
    if upload.pk is None or upload.s3_upload_id is None:
        raise LedgerError(
            f"upload {upload.id} of {upload.filename!r} is recorded as created without its server pk or S3 upload id: the ledger is damaged"
        )
    return UploadRef(upload.pk, upload.s3_upload_id)


class FileUpload:
    """Uploads one file of one case; ``run()`` returns the completed upload's ledger row."""

    def __init__(
        self,
        ctx: TransferContext,
        file: FileWork,
        case_title: str,
        pool: UnitPool | None = None,
        *,
        staged_copy: bool = False,
        upload_known: bool = False,
        with_completion: Sequence[Step[bool]] = (),
    ) -> None:
        self.ctx = ctx
        self.file = file
        # ``file`` is a de-identified copy (engine/upload/dicom_image_set.py), not the planned file: the upload's
        # row is fitted to the copy's size before a part is cut.
        self.staged_copy = staged_copy
        self.case_title = case_title
        # Live-upload units the case took for its files at once (``CaseUpload._upload_items``); empty: ask the gate.
        self.pool = pool or UnitPool()
        # Ledger ids of the uploads this run created: those it counted into the live-upload gate.
        self._created_here: set[int] = set()
        # ``file.upload`` is the ledger's live upload of the file as it is now (the case was just read, and nothing
        # else changes this file's uploads): the first try starts from it instead of asking the ledger again.
        self._upload_known = upload_known
        # Steps recorded in the transaction that records this upload completed (the item's ``item_uploaded`` when
        # this is its only file: nothing is asked of the server between the two); ``completion_recorded`` says
        # whether they were.
        self._with_completion = with_completion
        self.completion_recorded = False
        # Parts of this send whose ETags are not recorded yet; the one that records the last reads the upload back
        # in the same trip to the ledger (``_read_after_parts``), which completing needs, instead of a trip of its own.
        self._parts_unrecorded = 0
        self._read_after_parts: UploadRow | None = None

    async def _record(self, transition: Callable[P, T], *args: P.args, **fields: P.kwargs) -> T:
        return await self.ctx.journal.record(step(transition, *args, **fields), case=self.case_title)

    async def run(self) -> UploadRow:
        with item_budget(
            RetryBudget(
                self.ctx.config.retry.attempts_per_item,
                f"{self.case_title}/{self.file.name}",
                throttled_attempts=self.ctx.config.retry.throttled_attempts_per_item,
                limit_waits=self.ctx.config.retry.server_limit_retries,
            )
        ):
            async with self.ctx.files_limiter:
                uploads_under_way()  # the case moves files: the worker may claim its next case
                for _ in range(MAX_UPLOAD_RESTARTS + 1):
                    try:
                        check_unchanged(self.file)
                        if self._upload_known:
                            self._upload_known = False  # a second try asks the ledger
                            return await self._run_once(self.file.upload)
                        return await self._run_once(await self._live_upload())
                    except SourceFileChanged as changed:
                        await self.abort(str(changed))
                        raise
                    except MultipartUploadVanished as gone:
                        upload = await self._live_upload()
                        if upload is not None:
                            await self._record(self.ctx.journal.ledger.upload_expired, upload.id, reason=str(gone))
                            if upload.id in self._created_here:  # gone from the server's count too
                                await self.ctx.upload_gate.release(1)
                        log.info("%s: upload vanished (%s); starting a new one", self.file.relative_path, gone)
                raise MultipartUploadVanished(
                    f"{self.file.relative_path}: the upload vanished {MAX_UPLOAD_RESTARTS + 1} times in one run"
                )

    async def _live_upload(self) -> UploadRow | None:
        uploads = await self.ctx.journal.read(self.ctx.journal.ledger.uploads_of_file, self.file.id)
        live = [u for u in uploads if u.state in ("creating", "initialized", "completed")]
        return live[-1] if live else None

    async def _run_once(self, upload: UploadRow | None) -> UploadRow:
        if upload is not None and upload.state == "completed":
            if await self._still_usable(upload):
                return upload
            upload = None
        if upload is not None and upload.state == "creating":
            # The create's answer was never recorded: if it reached the server, that upload is an empty orphan the
            # sweep removes. A new one replaces it (uploads carry no key of ours to look it up by).
            await self._record(
                self.ctx.journal.ledger.upload_abandoned,
                upload.id,
                reason="the create was not confirmed before the run stopped",
            )
            upload = None
        if upload is None:
            upload = await self._create()
        else:
            upload = await self._reconcile_parts(upload)
            if upload.state == "completed":
                return upload
        await self._send_missing_parts(upload)
        return await self._complete(upload)

    async def _still_usable(self, upload: UploadRow) -> bool:
        """A completed upload is reused if the server still has it and it is young enough to be consumed in time."""
        age = _age_seconds(upload.created_at)
        reason = None
        if age is not None and age > self.ctx.config.reuse_completed_for_seconds:
            reason = f"completed {age / 3600:.1f} h ago; too close to the server's 24 h sweep to use"
        else:
            try:
                current = await self.ctx.client.get_upload(_server_ref(upload).pk)
            except NotFound:
                reason = "the server no longer has it (swept or consumed)"
            else:
                if current.get("status") == UPLOAD_COMPLETED:
                    return True
                reason = f"the server shows it as {current.get('status')!r}"
        # Not released from the live-upload gate: the start-of-run count of the server's uploads already left out a
        # swept one, and one too old to use still counts against the cap until the sweep takes it.
        await self._record(self.ctx.journal.ledger.upload_expired, upload.id, reason=reason)
        return False

    async def _intent(self, part_size: int) -> int:
        """Records the intent to create an upload (its ledger id); a staged copy's row is fitted to the copy."""
        upload_id = await self._record(self.ctx.journal.ledger.upload_creating, self.file.id, part_size=part_size)
        if self.staged_copy:
            await self.ctx.journal.runner.with_ledger(fit_upload, upload_id, self.file.size)
        return upload_id

    async def _create(self) -> UploadRow:
        ctx = self.ctx
        snapshot = ctx.stats.snapshot()
        ctx.config.sweep_guard.check(
            self.file.relative_path,
            self.file.size,
            snapshot.bytes_done - snapshot.bytes_resumed,
            snapshot.bytes_per_second or snapshot.average_bytes_per_second,
        )
        part_size = adjust_part_size(ctx.config.part_size, self.file.size)
        if not self.pool.take():
            await ctx.upload_gate.acquire(1, who=f"{self.case_title}/{self.file.name}")
        if ctx.stopping.is_set():  # a stopping run creates no upload (the stop may have come during the wait)
            ctx.upload_gate.release_nowait(1)
            raise Interrupted(f"{self.file.relative_path}: stopped before its upload was created")
        intent = [await self._intent(part_size)]
        crash_point("after-upload-intent")

        async def before_resend() -> None:
            # The lost create may have made an upload: its intent ends with the pk unknown (the orphan sweep looks for
            # it on the server and aborts it), it keeps its unit of the cap, and the resend gets an intent of its own.
            await self._record(
                ctx.journal.ledger.upload_abandoned,
                intent[0],
                reason="the create's answer was lost; an empty upload it made is aborted later",
            )
            if ctx.stopping.is_set():
                raise Interrupted(f"{self.file.relative_path}: stopped before its upload was created again")
            if not self.pool.take():
                await ctx.upload_gate.acquire(1, who=f"{self.case_title}/{self.file.name}")
            intent[0] = await self._intent(part_size)

        try:
            created = await ctx.client.create_upload(self.file.name, before_resend=before_resend)
        except BaseException as error:
            if not may_have_succeeded(error):  # else an orphan may exist: it counts until the sweep
                ctx.upload_gate.release_nowait(1)
            raise
        crash_point("after-create-upload")
        upload_id = intent[0]
        self._created_here.add(upload_id)
        ledger = self.ctx.journal.ledger
        upload = await self.ctx.journal.record_then_read(
            step(
                ledger.upload_initialized,
                upload_id,
                pk=created["pk"],
                s3_upload_id=created["s3_upload_id"],
                created_at=created.get("created"),
            ),
            step(ledger.upload, upload_id),
            case=self.case_title,
        )
        crash_point("after-upload-recorded")
        return upload

    async def _reconcile_parts(self, upload: UploadRow) -> UploadRow:
        """Resume: compare the ledger's parts with what S3 holds (list-parts)."""
        ref = _server_ref(upload)
        try:
            listed = await self.ctx.client.list_parts(ref)
        except UploadNoLongerOpen as closed:
            # The server is the truth: a Completed upload was completed by an earlier run whose record was lost (a
            # crash, or a ledger restored from an older copy). With every part recorded, its object is this file;
            # with parts missing from the ledger, a new upload is safer than guessing what was sent.
            if closed.status == UPLOAD_COMPLETED and not upload.missing_part_numbers:
                return await self._record_completed(upload)
            raise MultipartUploadVanished(str(closed)) from None  # a new upload replaces it
        on_server = {int(p["PartNumber"]): p for p in listed}
        specs = {spec.number: spec for spec in part_specs(upload.file_size, upload.part_size)}
        for number, part in upload.parts.items():
            held = on_server.get(number)
            if held is None or int(held.get("Size", -1)) != part.size or held.get("ETag") != part.etag:
                await self._record(
                    self.ctx.journal.ledger.part_invalidated,
                    upload.id,
                    number,
                    reason="list-parts does not show this part as sent",
                )
        for number, held in on_server.items():
            spec = specs.get(number)
            if number in upload.parts or spec is None or int(held.get("Size", -1)) != spec.size:
                continue
            # On S3 but not in the ledger: the run stopped between the PUT and its record. Keep it if its ETag is the
            # MD5 of our bytes — reading costs far less than sending.
            md5 = await anyio.to_thread.run_sync(part_md5, self.file.path, spec)
            if md5_of_etag(held.get("ETag", "")) == md5:
                await self._record(
                    self.ctx.journal.ledger.part_sent, upload.id, number, size=spec.size, etag=held["ETag"], md5=md5
                )
        return await self.ctx.journal.read(self.ctx.journal.ledger.upload, upload.id)

    async def _send_missing_parts(self, upload: UploadRow) -> None:
        ctx = self.ctx
        missing = upload.missing_part_numbers
        self._parts_unrecorded, self._read_after_parts = len(missing), None
        if not missing:
            return
        specs = {spec.number: spec for spec in part_specs(upload.file_size, upload.part_size)}
        ref = _server_ref(upload)
        urls = PresignedUrls(ctx.client.generate_presigned_urls, ref, missing, batch_size=ctx.config.presign_batch)
        stopped = False
        try:
            async with anyio.create_task_group() as group:
                for number in missing:
                    if ctx.stopping.is_set():
                        stopped = True  # start nothing new; parts already on the wire finish
                        break
                    borrower = object()
                    await ctx.parts_limiter.acquire_on_behalf_of(borrower)
                    if ctx.stopping.is_set():  # the stop came while this part waited for a slot
                        ctx.parts_limiter.release_on_behalf_of(borrower)
                        stopped = True
                        break
                    group.start_soon(self._send_part, upload.id, urls, specs[number], borrower)
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        if stopped:
            raise Interrupted(f"{self.file.relative_path}: stopped with parts left to send")

    async def _send_part(self, upload_id: int, urls: PresignedUrls, spec: PartSpec, borrower: object) -> None:
        ctx = self.ctx
        try:
            data = await anyio.to_thread.run_sync(read_part, self.file.path, spec)
            etag = await upload_part(
                ctx.client.session,
                urls,
                spec,
                data,
                policy=ctx.config.retry,
                progress=ctx.stats.add_bytes,
                on_retry=ctx.stats.count_retry,
            )
            del data
            crash_point("after-part-put")
            # The part's MD5 is S3's, from its ETag: what it stored, not what this process believes it sent.
            sent = step(
                self.ctx.journal.ledger.part_sent,
                upload_id,
                spec.number,
                size=spec.size,
                etag=etag,
                md5=md5_of_etag(etag),
            )
            self._parts_unrecorded -= 1
            if self._parts_unrecorded:
                await self.ctx.journal.record(sent, case=self.case_title)
            else:
                # The last part of the send: the others' records are queued before this one (the ledger takes them
                # in order), so the read after it sees every part.
                self._read_after_parts = await self.ctx.journal.record_then_read(
                    sent, step(self.ctx.journal.ledger.upload, upload_id), case=self.case_title
                )
            crash_point("after-part-recorded")
        finally:
            ctx.parts_limiter.release_on_behalf_of(borrower)

    async def _complete(self, upload: UploadRow) -> UploadRow:
        read, self._read_after_parts = self._read_after_parts, None
        if read is None or read.id != upload.id or read.missing_part_numbers:
            read = await self.ctx.journal.read(self.ctx.journal.ledger.upload, upload.id)
        upload = read
        check_unchanged(self.file)  # a file rewritten while its parts were sent must not be completed
        wrong = await parts_not_as_planned(self.file, upload, staged_copy=self.staged_copy)
        if wrong:
            # The file is as planned but S3 holds other bytes for these parts: they are sent once more, then checked
            # again; a second mismatch is not a fluke of the wire.
            for number in wrong:
                await self._record(
                    self.ctx.journal.ledger.part_invalidated,
                    upload.id,
                    number,
                    reason="S3's ETag is not the MD5 of the file's bytes for this part",
                )
                # Those bytes did not arrive as sent: progress gives them back before they are sent again.
                self.ctx.stats.add_bytes(-upload.parts[number].size)
            upload = await self.ctx.journal.read(self.ctx.journal.ledger.upload, upload.id)
            await self._send_missing_parts(upload)
            upload = await self.ctx.journal.read(self.ctx.journal.ledger.upload, upload.id)
            check_unchanged(self.file)
            if wrong := await parts_not_as_planned(self.file, upload, staged_copy=self.staged_copy):
                raise PartIntegrityError(
                    f"{self.file.relative_path}: S3 stored other bytes than the file's for parts {wrong[:10]}, twice "
                    "(its ETags are not the MD5s of those parts)"
                )
        crash_point("before-complete")
        parts = [{"PartNumber": number, "ETag": part.etag} for number, part in sorted(upload.parts.items())]
        await self.ctx.client.complete_multipart_upload(_server_ref(upload), parts)
        crash_point("after-complete")
        upload = await self._record_completed(upload)
        crash_point("after-upload-completed")
        return upload

    async def _record_completed(self, upload: UploadRow) -> UploadRow:
        ledger = self.ctx.journal.ledger
        completed = await self.ctx.journal.record_then_read(
            step(ledger.upload_completed, upload.id),
            step(ledger.upload, upload.id),
            case=self.case_title,
            also=self._with_completion,
        )
        self.completion_recorded = True
        return completed

    async def abort(self, reason: str) -> None:
        """A fatal error for this file (it changed): free the upload's parts on the server."""
        upload = await self._live_upload()
        if upload is None or upload.state != "initialized":
            return
        try:
            await self.ctx.client.abort_multipart_upload(_server_ref(upload))
        except (ApiError, MultipartUploadVanished) as error:
            log.info("abort of upload %s failed (%s); the server sweeps it after 24 h", upload.pk, error)
        # An aborted upload still exists (status Aborted) and counts against the cap until the sweep: no release.
        await self._record(self.ctx.journal.ledger.upload_aborted, upload.id, reason=reason)

"""One case → one display set whose values Grand Challenge has imported (contract §3).

Steps, each recorded in the ledger before the next begins, so a run stopped anywhere continues from there:
1. upload every file of every image/file socket (``engine/upload/file_upload.py``), all concurrently;
2. find the display set by its title (the idempotency key) or create it — never a second one;
3. create one upload session per image value (``POST cases/upload-sessions/``, Queued, inert) and record its pk;
4. PATCH the values in one request: ``upload_session`` for image sockets, ``user_upload`` for file sockets,
   ``value`` for value sockets — after a failure that may have reached the server, sent again only if the server
   shows it did not take effect;
5. follow each import by its session's pk (``GET cases/upload-sessions/{pk}/``) and the display set: a session that
   ends Failed fails its value with the server's ``error_message`` within seconds, whatever its (emptied) upload list
   shows (contract §10); the case ends **done** or **failed with that reason**.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from gcbulk.engine.gc.client import display_set_title
from gcbulk.engine.gc.errors import (
    ApiError,
    ConfigurationError,
    Disposition,
    GcbulkError,
    Interrupted,
    NotFound,
    classify,
    first_error,
)
from gcbulk.engine.gc.retry import RetryBudget, item_budget
from gcbulk.engine.upload.context import TransferContext
from gcbulk.engine.upload.crashpoints import crash_point
from gcbulk.engine.upload.file_upload import FileUpload
from gcbulk.engine.upload.imports import (
    SESSION_ENDED_BADLY,
    SESSION_QUEUED,
    SESSION_SUCCEEDED,
    UploadSessionIndex,
    present_sockets,
)
from gcbulk.state.records import CaseWork, ItemWork

log = logging.getLogger(__name__)

IMAGE, FILE, VALUE = "Image", "File", "Value"


class TitleTaken(GcbulkError):
    """A display set with the case's title exists and is not this job's to fill."""


class DisplaySetIndex:
    """Title → pk of the study's display sets, read once per run (one scan instead of one per case): a display set
    created just before a crash is found here and adopted."""

    def __init__(self, ctx: TransferContext) -> None:
        self._ctx = ctx
        self._titles: dict[str, str] | None = None
        self._lock = anyio.Lock()

    async def lookup(self, title: str) -> str | None:
        async with self._lock:
            if self._titles is None:
                study = await self._ctx.client.reader_study_by_slug(self._ctx.reader_study_slug)
                self._titles = {}
                async for display_set in self._ctx.client.iterate_display_sets(study["pk"]):
                    name = display_set_title(display_set)
                    if name:
                        self._titles[name] = display_set["pk"]
        return self._titles.get(title)


class CaseUpload:
    def __init__(self, ctx: TransferContext, case: CaseWork, sessions: UploadSessionIndex,
                 display_sets: DisplaySetIndex) -> None:
        self.ctx = ctx
        self.case = case
        self.sessions = sessions
        self.display_sets = display_sets
        self.import_units = 0  # import-gate units this case holds

    async def _record(self, transition: str, *args: object, **fields: object) -> object:
        return await self.ctx.journal.record(transition, *args, case=self.case.title, **fields)

    async def _refresh(self) -> CaseWork:
        self.case = await self.ctx.journal.read("case_work", self.case.id)
        return self.case

    async def run(self) -> bool:
        """True when the case is done, False when it failed (the reason is in the ledger)."""
        await self._record("case_started", self.case.id)
        try:
            with item_budget(RetryBudget(self.ctx.config.retry.attempts_per_item, self.case.title,
                                         throttled_attempts=self.ctx.config.retry.throttled_attempts_per_item)):
                kinds = await self._super_kinds()
                if self.case.display_set.pk and any(i.state == "uploaded" for i in self.case.items):
                    await self._adopt_earlier_patch(kinds)
                await self._upload_items(kinds)
                self._stop_point("before its display set")
                pk = await self._ensure_display_set()
                self._stop_point("before its values")
                await self._attach_values(pk, kinds)
                return await self._await_imports(pk, kinds)
        except BaseException as raised:  # noqa: BLE001 - classified below; interruption and stop-run re-raised
            error = first_error(raised)
            if classify(error) in (Disposition.INTERRUPTED, Disposition.STOP_RUN):
                raise
            await self._fail(str(error) or type(error).__name__)
            return False
        finally:
            if self.import_units:
                self.ctx.import_gate.release_nowait(self.import_units)
                self.import_units = 0

    def _stop_point(self, where: str) -> None:
        """Between steps, a stopping run starts nothing new; the case resumes here next time."""
        if self.ctx.stopping.is_set():
            raise Interrupted(f"{self.case.title}: stopped {where}")

    async def _fail(self, reason: str) -> None:
        await self._refresh()
        if self.case.display_set.state in ("created", "values_attached", "importing"):
            await self._record("display_set_failed", self.case.id, reason=reason)
        await self._record("case_failed", self.case.id, reason=reason)
        self.ctx.stats.cases_failed += 1

    async def _super_kinds(self) -> dict[str, str]:
        kinds = {}
        for item in self.case.items:
            kind = item.super_kind
            if kind is None:  # planned offline: ask the server once per socket (cached by the client)
                socket = await self.ctx.client.get_socket(item.socket_slug)
                if socket is None:
                    raise ConfigurationError(
                        f"socket {item.socket_slug!r} does not exist on {self.ctx.client.base_url}; fix the job's "
                        "rules and run 'gcbulk plan' again"
                    )
                kind = socket["super_kind"]
            kinds[item.socket_slug] = kind
        return kinds

    # ---- 1. uploads ------------------------------------------------------------------------------------------

    async def _upload_items(self, kinds: dict[str, str]) -> None:
        work = [i for i in self.case.items
                if kinds[i.socket_slug] in (IMAGE, FILE) and i.state in ("planned", "uploading", "uploaded")]
        if not work:
            return
        interrupted: list[Interrupted] = []
        try:
            async with anyio.create_task_group() as group:
                for item in work:
                    group.start_soon(self._upload_item, item, kinds[item.socket_slug], interrupted)
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        if interrupted:
            raise interrupted[0]
        await self._refresh()

    async def _upload_item(self, item: ItemWork, kind: str, interrupted: list[Interrupted]) -> None:
        """Uploads an item's files. A stop (Interrupted) is collected, not raised, so it does not cancel the parts
        that sibling files still have on the wire: the drain lets those finish."""
        if kind == FILE and len(item.files) != 1:
            reason = f"socket {item.socket_slug} takes exactly one file, the plan has {len(item.files)}"
            await self._record("item_failed", item.id, reason=reason)
            raise ValueError(reason)
        if item.state == "planned":
            await self._record("item_uploading", item.id)
        stopped: list[Interrupted] = []
        try:
            async with anyio.create_task_group() as group:
                for file in item.files:
                    group.start_soon(self._upload_file, file, stopped)
        except BaseException as raised:
            error = first_error(raised)
            if classify(error) not in (Disposition.INTERRUPTED, Disposition.STOP_RUN):
                await self._record("item_failed", item.id, reason=f"{item.socket_slug}: {error}")
                self.ctx.stats.files_failed += 1
            raise error from None
        if stopped:
            interrupted.append(stopped[0])
            return
        await self._record("item_uploaded", item.id)

    async def _upload_file(self, file: Any, stopped: list[Interrupted]) -> None:
        try:
            await FileUpload(self.ctx, file, self.case.title).run()
        except Interrupted as stop:
            stopped.append(stop)
            return
        self.ctx.stats.files_done += 1

    # ---- 2. display set --------------------------------------------------------------------------------------

    async def _ensure_display_set(self) -> str:
        ds = (await self._refresh()).display_set
        if ds.pk and ds.state != "pending":
            return ds.pk
        existing = await self.display_sets.lookup(self.case.title)
        if existing is not None:
            # Found by title: ours only if this ledger set out to make it (a create whose answer was lost); anyone
            # else's is taken over only when asked, and never one with answers (contract §10).
            if ds.state != "creating" and not self.ctx.config.adopt_existing:
                raise TitleTaken(
                    f"the reader study already has a display set titled {self.case.title!r} that this job did not "
                    "make; rename the case folder, or run with --adopt-existing to fill its empty sockets")
            if ds.state != "creating" and await self.ctx.client.display_set_has_answers(existing):
                raise TitleTaken(f"display set {self.case.title!r} already has answers: gcbulk does not change it "
                                 "(Grand Challenge refuses changes to an answered display set)")
            await self._record("display_set_created", self.case.id, pk=existing)
            self.ctx.journal.note("display_set_adopted", case=self.case.title, pk=existing)
            return existing
        await self._record("display_set_creating", self.case.id)
        crash_point("after-display-set-intent")
        try:
            created = await self.ctx.client.create_display_set(self.ctx.reader_study_slug, self.case.title)
        except ApiError as error:
            if error.status == 400:  # refused outright: certainly not created
                await self._record("display_set_not_created", self.case.id, reason=str(error))
            raise
        crash_point("after-create-display-set")
        await self._record("display_set_created", self.case.id, pk=created["pk"])
        crash_point("after-display-set-recorded")
        return created["pk"]

    # ---- 3. values -------------------------------------------------------------------------------------------

    async def _adopt_earlier_patch(self, kinds: dict[str, str]) -> None:
        """After a crash between the values PATCH and its record, the uploads may be consumed already: sending the
        PATCH again would name uploads that no longer exist. Items the server took are recorded as attached."""
        display_set = await self.ctx.client.get_display_set(self.case.display_set.pk)
        for item in self.case.items:
            if item.state == "uploaded" and await self._taken_by_server(item, display_set, kinds):
                await self._record("item_attached", item.id)
        await self._refresh()

    async def _taken_by_server(self, item: ItemWork, display_set: dict[str, Any], kinds: dict[str, str]) -> bool:
        """Whether a values PATCH naming ``item`` took effect: its value is in place, its session left Queued, or
        its upload was consumed. The server's word, for when the PATCH's own answer was lost."""
        if item.socket_slug in present_sockets(display_set, kinds):
            return True
        kind = kinds[item.socket_slug]
        if kind == VALUE:
            return False
        if item.upload_session_pk:
            session = await self.ctx.client.get_upload_session(item.upload_session_pk)
            return session.get("status") != SESSION_QUEUED
        upload_pks = await self.ctx.journal.read("item_upload_pks", item.id)
        if kind == IMAGE:
            # A session that holds these uploads but is still Queued was created and never named by a PATCH
            # (a crash between the two): it is not a sign that the PATCH took effect.
            session = await self.sessions.find(upload_pks)
            if session is not None and session.get("status") != SESSION_QUEUED:
                return True
        if upload_pks:
            try:
                await self.ctx.client.get_upload(upload_pks[0])
            except NotFound:
                return True  # consumed by the import or the file copy
        return False

    async def _ensure_sessions(self, items: list[ItemWork], kinds: dict[str, str]) -> None:
        """One upload session per image item, created (Queued: nothing runs yet) and recorded before the PATCH names
        it, so a crash anywhere leaves a session the next run finds by its pk."""
        client = self.ctx.client
        for item in items:
            if kinds[item.socket_slug] != IMAGE or item.upload_session_pk or not self.ctx.upload_sessions:
                continue
            urls = [client.upload_url(pk) for pk in await self.ctx.journal.read("item_upload_pks", item.id)]
            try:
                session = await client.create_upload_session(urls)
            except ApiError as error:
                if error.status not in (403, 404, 405):
                    raise
                # A server without the endpoint (or that refuses it to this user): name the uploads in the PATCH,
                # as gcapi's tutorial flow does, and say so once.
                self.ctx.upload_sessions = False
                log.warning("the server refused to create upload sessions (%s); naming the uploads in the values "
                            "PATCH instead: a failed import is then found only by scanning the session list",
                            error.status)
                self.ctx.journal.note("upload_sessions_refused", status=error.status)
                return
            crash_point("after-session-created")
            await self._record("item_session_created", item.id, str(session["pk"]))

    async def _attach_values(self, pk: str, kinds: dict[str, str]) -> None:
        case = await self._refresh()
        items = [i for i in case.items
                 if i.state == "uploaded" or (kinds[i.socket_slug] == VALUE and i.state == "planned")]
        if not items:
            return
        imports = sum(1 for item in items if kinds[item.socket_slug] == IMAGE)
        if imports:
            self.import_units += await self.ctx.import_gate.acquire(imports, for_what=self.case.title)
            self._stop_point("before its values")  # the wait may have been long: a stop since starts nothing
        await self._ensure_sessions(items, kinds)
        wanted = {item.id for item in items}
        items = [i for i in (await self._refresh()).items if i.id in wanted]
        client = self.ctx.client
        values: list[dict[str, Any]] = []
        for item in items:
            kind = kinds[item.socket_slug]
            if kind == VALUE:
                values.append({"interface": item.socket_slug, "value": item.value})
            elif kind == IMAGE and item.upload_session_pk:
                values.append({"interface": item.socket_slug,
                               "upload_session": client.upload_session_url(item.upload_session_pk)})
            else:
                urls = [client.upload_url(upload_pk)
                        for upload_pk in await self.ctx.journal.read("item_upload_pks", item.id)]
                values.append({"interface": item.socket_slug, "user_uploads": urls} if kind == IMAGE
                              else {"interface": item.socket_slug, "user_upload": urls[0]})

        async def took_effect() -> dict[str, Any] | None:
            display_set = await client.get_display_set(pk)
            for item in items:
                if await self._taken_by_server(item, display_set, kinds):
                    return display_set
            return None

        crash_point("before-values-patch")
        try:
            await client.update_display_set(pk, values=values, reconcile=took_effect)
        except ApiError as error:
            # A refusal after an attempt whose answer was lost (the uploads or the session are consumed by then):
            # what counts is whether the values are on the server, not what this answer says.
            if error.status != 400 or await took_effect() is None:
                raise
            log.info("%s: the values PATCH was refused (%s) but the server had taken it already", case.title, error)
        crash_point("after-values-patch")
        for item in items:
            await self._record("item_attached", item.id)
        await self._record("display_set_values_attached", case.id)
        await self._record("display_set_importing", case.id)
        crash_point("after-values-recorded")

    async def _mark_importing(self) -> None:
        """The display set follows its items: once any value is attached, it is importing (also after a resume
        that found the values PATCH had been taken before the crash)."""
        case = await self._refresh()
        if case.display_set.state == "created":
            await self._record("display_set_values_attached", case.id)
        if case.display_set.state in ("created", "values_attached"):
            await self._record("display_set_importing", case.id)

    # ---- 4. imports ------------------------------------------------------------------------------------------

    async def _await_imports(self, pk: str, kinds: dict[str, str]) -> bool:
        ctx = self.ctx
        await self._mark_importing()
        waiting = [i for i in self.case.items if i.state == "attached"]
        images_waiting = sum(1 for i in waiting if kinds[i.socket_slug] == IMAGE)
        if images_waiting > self.import_units:  # resumed with imports in flight from an earlier run
            self.import_units += await ctx.import_gate.acquire(images_waiting - self.import_units,
                                                               for_what=self.case.title)
        deadline = time.monotonic() + ctx.config.import_timeout_seconds
        succeeded_at: dict[int, float] = {}  # item id -> when its session said Succeeded
        delay = ctx.config.poll_initial_seconds
        polls = 0
        while waiting:
            present = present_sockets(await ctx.client.get_display_set(pk), kinds)
            still = []
            for item in waiting:
                if item.socket_slug in present:
                    await self._record("item_done", item.id)
                    await self._item_finished(item, kinds, consumed=True)
                    continue
                reason = await self._import_failure(item, kinds, succeeded_at, polls)
                if reason is None:
                    still.append(item)
                    continue
                await self._record("item_failed", item.id, reason=f"{item.socket_slug}: {reason}")
                await self._item_finished(item, kinds, consumed=False)
            waiting = still
            if not waiting:
                break
            if time.monotonic() > deadline:
                for item in waiting:
                    await self._record("item_failed", item.id, reason=(
                        f"{item.socket_slug}: the import did not finish within "
                        f"{ctx.config.import_timeout_seconds:.0f} s"))
                    await self._item_finished(item, kinds, consumed=False)
                break
            if ctx.stopping.is_set():
                raise Interrupted(f"{self.case.title}: stopped while waiting for imports")
            crash_point("during-import-poll")
            await anyio.sleep(delay)
            delay = min(delay * 1.5, ctx.config.poll_max_seconds)
            polls += 1
        return await self._finish()

    async def _import_failure(self, item: ItemWork, kinds: dict[str, str], succeeded_at: dict[int, float],
                              polls: int) -> str | None:
        """Why ``item``'s import has failed, or None while it may still succeed. Followed by its own session when it
        has one (a failed session's upload list is empty on the server: only its pk finds it, contract §10)."""
        if kinds[item.socket_slug] != IMAGE:
            return None
        if item.upload_session_pk:
            session = await self.ctx.client.get_upload_session(item.upload_session_pk)
            status = session.get("status")
            if status in SESSION_ENDED_BADLY:
                return session.get("error_message") or f"the import ended {status} (the server gave no reason)"
            if status == SESSION_SUCCEEDED:
                # The value is linked by a separate task after the session succeeds, queued behind other imports.
                first = succeeded_at.setdefault(item.id, time.monotonic())
                if time.monotonic() - first > self.ctx.config.link_timeout_seconds:
                    return (f"the import succeeded but its value did not appear in the display set within "
                            f"{self.ctx.config.link_timeout_seconds:.0f} s")
            return None
        if polls < 1:
            return None
        # No session of ours (the server refused to create one): find it by its uploads in the session list.
        session = await self.sessions.find(await self.ctx.journal.read("item_upload_pks", item.id))
        if session is not None and session.get("status") in SESSION_ENDED_BADLY:
            return session.get("error_message") or f"the import ended {session.get('status')}"
        return None

    async def _item_finished(self, item: ItemWork, kinds: dict[str, str], *, consumed: bool) -> None:
        kind = kinds[item.socket_slug]
        if kind == IMAGE and self.import_units:
            self.import_units -= 1
            await self.ctx.import_gate.release(1)
        # Contract §1: a successful import deletes its uploads; a failed one leaves them to the 24 h sweep.
        if consumed and kind in (IMAGE, FILE):
            await self.ctx.upload_gate.release(len(item.files))

    async def _finish(self) -> bool:
        case = await self._refresh()
        failed = [i for i in case.items if i.state == "failed"]
        if failed:
            reason = "; ".join(i.last_error or f"{i.socket_slug}: failed" for i in failed)
            await self._fail(reason)
            return False
        crash_point("after-import-seen")
        await self._record("display_set_done", case.id)
        await self._record("case_done", case.id)
        self.ctx.stats.cases_done += 1
        crash_point("after-case-done")
        return True

"""One case → one display set whose values Grand Challenge has imported (docs/gc-api.md §3).

Steps, each recorded in the ledger before the next begins, so a run stopped anywhere continues from there:
1. upload every file of every image/file socket (``engine/upload/file_upload.py``), all concurrently;
2. find the display set by its title (the idempotency key) or create it — never a second one;
3. send the values: each image as an upload session aimed at the display set (``POST cases/upload-sessions/`` with
   ``display_set`` and ``interface``, ``engine/upload/targeted_sessions.py``); file (``user_upload``) and value
   sockets in one values PATCH;
4. poll the display set until every value is present, or its import failed (the upload session's
   ``error_message``), or the import timeout passed: the case ends **done** or **failed with that reason**.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import anyio

from gcbulk.engine.gc.display_set_create import TitleTaken
from gcbulk.engine.gc.errors import (
    ApiError,
    ConfigurationError,
    Disposition,
    ForeignDisplaySet,
    Interrupted,
    NotFound,
    UploadsSwept,
    classify,
    first_error,
)
from gcbulk.engine.gc.retry import RetryBudget, item_budget
from gcbulk.engine.upload.case_files import CaseFiles
from gcbulk.engine.upload.claim_pacing import uploads_under_way
from gcbulk.engine.upload.context import TransferContext
from gcbulk.engine.upload.crashpoints import crash_point
from gcbulk.engine.upload.dicom_image_set import image_set_value, is_image_set, release_case
from gcbulk.engine.upload.import_wait import ImportWait
from gcbulk.engine.upload.imports import (
    SESSION_QUEUED,
    SessionsRefused,
    UploadSessionIndex,
    any_upload_gone,
    present_sockets,
    session_for_item,
)
from gcbulk.engine.upload.targeted_sessions import (
    image_linked_soon,
    post_targeted,
    targeted_value,
)
from gcbulk.engine.upload.values_patch import FILE, IMAGE, VALUE, PlannedValue, refers_to_image, send_values
from gcbulk.state.machines import IllegalTransition
from gcbulk.state.records import CaseWork, ItemWork
from gcbulk.state.steps import Step, step

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)


class DisplaySetIndex:
    """Title → pk of the display sets in the pass's listing of the study (``engine/upload/reconcile.py``) whose title
    is that of a case of this job with none recorded: a display set created just before a crash is found here and
    adopted."""

    def __init__(self, titles: dict[str, str]) -> None:
        self._titles = titles

    async def lookup(self, title: str) -> str | None:
        return self._titles.get(title)

    def forget(self, title: str) -> None:
        """The display set of ``title`` answered 404: it is not there to adopt any more."""
        self._titles.pop(title, None)


class CaseUpload:
    """One case's way to an imported display set. Its steps 1 and 4 are collaborators that read the case through it:
    ``files`` (``CaseFiles``) and ``imports`` (``ImportWait``)."""

    def __init__(
        self, ctx: TransferContext, case: CaseWork, sessions: UploadSessionIndex, display_sets: DisplaySetIndex
    ) -> None:
        self.ctx = ctx
        self.case = case  # as last read from the ledger (``_refresh``)
        self.sessions = sessions
        self.display_sets = display_sets
        self.import_units = 0  # import-gate units this case holds
        self._adopted_foreign = False  # its display set was made by someone else (run --adopt-existing)
        self.session_of: dict[str, str] = {}  # socket → the upload session its image was sent as (this pass)
        self._values_sent_at: float | None = None  # when this pass PATCHed the values (the import wait counts from it)
        self.files = CaseFiles(self)
        self.imports = ImportWait(self)

    async def record(self, transition: Callable[P, T], *args: P.args, **fields: P.kwargs) -> T:
        """``transition(*args, **fields)`` on the ledger's thread, with the event line naming this case."""
        return await self.ctx.journal.record(step(transition, *args, **fields), case=self.case.title)

    async def record_together(self, steps: list[Step[bool]]) -> list[bool]:
        return await self.ctx.journal.record_together(steps, case=self.case.title)

    async def _refresh(self) -> CaseWork:
        self.case = await self.ctx.journal.read(self.ctx.journal.ledger.case_work, self.case.id)
        return self.case

    async def run(self) -> bool:
        """True when the case is done, False when it failed (the reason is in the ledger)."""
        await self.record(self.ctx.journal.ledger.case_started, self.case.id)
        try:
            with item_budget(
                RetryBudget(
                    self.ctx.config.retry.attempts_per_item,
                    self.case.title,
                    throttled_attempts=self.ctx.config.retry.throttled_attempts_per_item,
                    limit_waits=self.ctx.config.retry.server_limit_retries,
                )
            ):
                kinds = await self._super_kinds()
                try:
                    return await self._steps(kinds)
                except UploadsSwept as swept:
                    # The server is the truth: uploads it swept after they were completed are made again (once
                    # per run), whatever step the case had reached; the display set and other values stay.
                    log.warning("%s; uploading its files again", swept)
                    self.ctx.journal.note("uploads_swept", case=self.case.title, reason=str(swept))
                    await self.record(self.ctx.journal.ledger.item_requeued, swept.item_id)
                    await self._refresh()
                    return await self._steps(kinds)
                except NotFound as error:
                    if not self._is_own_display_set(error):
                        raise
                    # The server is the truth: a display set it no longer has is replaced (once per run), never
                    # retried forever.
                    await self.record(
                        self.ctx.journal.ledger.case_lost_on_server,
                        self.case.id,
                        display_set_gone=True,
                        reason=f"display set {self.case.display_set.pk} answered 404 (deleted, or "
                        "the server lost it); creating a new one",
                    )
                    log.warning(
                        "%s: display set %s is gone from the server; creating a new one",
                        self.case.title,
                        self.case.display_set.pk,
                    )
                    self.display_sets.forget(self.case.title)
                    await self._refresh()
                    return await self._steps(kinds)
        except BaseException as raised:  # noqa: BLE001 - classified below; interruption and stop-run re-raised
            cause = first_error(raised)
            if classify(cause) in (Disposition.INTERRUPTED, Disposition.STOP_RUN):
                raise
            await self._fail(str(cause) or type(cause).__name__)
            return False
        finally:
            if self.import_units:
                self.ctx.import_gate.release_nowait(self.import_units)
                self.import_units = 0
            with anyio.CancelScope(shield=True):
                await release_case(self)

    def stop_point(self, where: str) -> None:
        """Between steps, a stopping run starts nothing new; the case resumes here next time."""
        if self.ctx.stopping.is_set():
            raise Interrupted(f"{self.case.title}: stopped {where}")

    async def _fail(self, reason: str) -> None:
        await self._refresh()
        if self._blocked_meanwhile():
            return
        # One transaction: a crash leaves the case as it was before its failure (it is tried again) or failed.
        ledger = self.ctx.journal.ledger
        steps: list[Step[bool]] = []
        if self.case.display_set.state in ("created", "values_attached", "importing"):
            steps.append(step(ledger.display_set_failed, self.case.id, reason=reason))
        steps.append(step(ledger.case_failed, self.case.id, reason=reason))
        try:
            await self.record_together(steps)
        except IllegalTransition:
            if self._blocked_meanwhile(await self._refresh()):
                return
            raise
        self.ctx.stats.cases_failed += 1

    def _blocked_meanwhile(self, case: CaseWork | None = None) -> bool:
        """On a shared ledger another worker's plan may block this case while it runs — e.g. once its create was
        refused, its title is another job's display set. The plan's finding says why; the case stays blocked."""
        if (case or self.case).state != "blocked":
            return False
        log.info("%s: blocked by a plan while it ran (the plan's findings say why)", self.case.title)
        return True

    async def _steps(self, kinds: dict[str, str]) -> bool:
        if self.case.display_set.pk and any(i.state == "uploaded" for i in self.case.items):
            await self._adopt_earlier_patch(kinds)
        await self.files.upload(kinds)
        uploads_under_way()  # nothing (left) to upload: the worker may claim its next case
        self.stop_point("before its display set")
        pk = await self._ensure_display_set()
        self.stop_point("before its values")
        if not await self._attach_values(pk, kinds):
            await self._mark_importing()
        await self.imports.wait(pk, kinds, values_sent_at=self._values_sent_at)
        return await self._finish()

    def _is_own_display_set(self, error: NotFound) -> bool:
        pk = self.case.display_set.pk
        return pk is not None and self.ctx.target.container_path(pk) in (error.url or "")

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

    # ---- 2. display set --------------------------------------------------------------------------------------

    async def _ensure_display_set(self) -> str:
        """The display set's pk, made or adopted if the ledger has none; ``self.case`` is then the ledger's as it
        stands (read here, or with the record of the pk), which ``_attach_values`` works from without reading it
        again."""
        ds = (await self._refresh()).display_set
        if ds.pk and ds.state != "pending":
            return ds.pk
        existing = await self.display_sets.lookup(self.case.title)
        if existing is not None:
            if ds.state == "creating":  # this job set out to create it; the answer was lost before it was recorded
                reason = await self._claim_lost_create(existing)
            else:
                reason = await self._may_adopt_foreign(existing)
            await self._record_created(existing)
            self.ctx.journal.note("display_set_adopted", case=self.case.title, pk=existing, reason=reason)
            return existing
        await self.record(self.ctx.journal.ledger.display_set_creating, self.case.id)
        crash_point("after-display-set-intent")
        try:
            created = await self.ctx.target.create(self.case.title, ds.create_order)
        except TitleTaken as taken:  # the server said no: another job or person holds the title
            await self.record(self.ctx.journal.ledger.display_set_not_created, self.case.id, reason=str(taken))
            if not self.ctx.config.adopt_existing:
                raise self._not_ours(taken) from None
            reason = await self._may_adopt_foreign(taken.pk)
            await self._record_created(taken.pk)
            self.ctx.journal.note("display_set_adopted", case=self.case.title, pk=taken.pk, reason=reason)
            return taken.pk
        except ApiError as error:
            if error.status in (400, 500):  # the server's own answer: certainly not created
                await self.record(self.ctx.journal.ledger.display_set_not_created, self.case.id, reason=str(error))
            raise
        crash_point("after-create-display-set")
        await self._record_created(created["pk"])
        crash_point("after-display-set-recorded")
        return str(created["pk"])

    async def _record_created(self, pk: str) -> None:
        """The display set's pk recorded, and the case read back in the same trip to the ledger."""
        ledger = self.ctx.journal.ledger
        self.case = await self.ctx.journal.record_then_read(
            step(ledger.display_set_created, self.case.id, pk=pk),
            step(ledger.case_work, self.case.id),
            case=self.case.title,
        )

    async def _claim_lost_create(self, pk: str) -> str:
        """The display set titled like this case after a create whose answer was lost (a crash, a dropped
        connection): this job's own only if the server shows nothing that contradicts it, else blocked."""
        why_not = self.ctx.target.lost_create_contradiction(
            await self.ctx.target.get(pk), order=self.case.display_set.create_order
        )
        if why_not is None:
            return "this job's own create, answer lost"
        taken = TitleTaken(self.case.title, pk, f"the create's answer was lost and {why_not}")
        await self.record(self.ctx.journal.ledger.display_set_not_created, self.case.id, reason=str(taken))
        if self.ctx.config.adopt_existing:
            return await self._may_adopt_foreign(pk)
        raise self._not_ours(taken)

    def _not_ours(self, taken: TitleTaken) -> ForeignDisplaySet:
        return ForeignDisplaySet(
            f"{self.ctx.target.ref.label}: the {self._noun} titled {taken.title!r} (pk {taken.pk}) "
            f"was made by another job or person while this job was creating its own ({taken.why}); nothing of this "
            "case was sent into it. Rename the case folder, or run with --adopt-existing to add its missing values "
            f"to that {self._noun}"
        )

    @property
    def _noun(self) -> str:
        return self.ctx.target.ref.container_noun

    async def _may_adopt_foreign(self, pk: str) -> str:
        """A display set with this case's title that this job did not create: not ours to fill, unless the user
        asked (``run --adopt-existing``) and nobody answered on it."""
        target, noun = self.ctx.target, self._noun
        if not self.ctx.config.adopt_existing:
            raise ForeignDisplaySet(
                f"{target.ref.label} already has {target.ref.a_container} titled {self.case.title!r} (pk {pk}) that this "
                "job did not create; rename the case folder, or run with --adopt-existing to add its missing "
                f"values to that {noun} (values already there are kept)"
            )
        if await target.has_answers(pk):  # never for an archive item (docs/gc-api.md §12: no answers)
            raise ForeignDisplaySet(
                f"display set {self.case.title!r} (pk {pk}) in {target.ref.slug!r} already has answers: gcbulk never "
                "changes a display set that readers answered on, even with --adopt-existing"
            )
        self._adopted_foreign = True
        return "--adopt-existing"

    # ---- 3. values -------------------------------------------------------------------------------------------

    async def _adopt_earlier_patch(self, kinds: dict[str, str]) -> None:
        """After a crash between the values PATCH and its record, the uploads may be consumed already: sending the
        PATCH again would name uploads that no longer exist. Items the server took are recorded as attached. The
        items are looked at side by side: one that must wait for its image to show (below) does not hold the others'."""
        pk = self.case.display_set.pk
        if pk is None:  # no display set yet: no PATCH was sent
            return
        display_set = await self.ctx.target.get(pk)
        present = present_sockets(display_set, kinds)

        async def adopt(item: ItemWork) -> None:
            if await self._taken_by_earlier_patch(item, pk, present, kinds):
                await self.record(self.ctx.journal.ledger.item_attached, item.id)

        async with anyio.create_task_group() as group:
            for item in self.case.items:
                if item.state == "uploaded":
                    group.start_soon(adopt, item)
        await self._refresh()

    async def _taken_by_earlier_patch(
        self, item: ItemWork, display_set_pk: str, present: set[str], kinds: dict[str, str]
    ) -> bool:
        """Whether the server took this uploaded item's value before the crash (its uploads are then consumed)."""
        if item.socket_slug in present:
            return True
        upload_pks = await self.ctx.journal.read(self.ctx.journal.ledger.item_upload_pks, item.id)
        if kinds[item.socket_slug] == IMAGE and not await is_image_set(self.ctx, item.socket_slug):
            session_pk = await self.ctx.journal.read(self.ctx.journal.ledger.item_upload_session, item.id)
            if session_pk:  # its own session left Queued only if the PATCH named it (docs/gc-api.md §10)
                try:
                    session = await self.ctx.client.get_upload_session(session_pk)
                except NotFound:
                    session = {}
                return bool(session.get("status", SESSION_QUEUED) != SESSION_QUEUED)
            # Killed between its session POST and the record, or an older gcbulk's direct attach.
            found = await self.sessions.find(upload_pks)
            if found is not None and found.get("status") != SESSION_QUEUED:
                return True
            if upload_pks and await any_upload_gone(self.ctx.client, tuple(upload_pks)):
                # Consumed by an import whose image the server links moments later (§10), or swept: sent again only
                # if no image comes, never a second import of the same file.
                return await image_linked_soon(
                    self.ctx.target,
                    display_set_pk,
                    item.socket_slug,
                    who=self.case.title,
                    wait_seconds=self.ctx.config.image_link_wait_seconds,
                )
            return False
        if upload_pks:
            try:
                await self.ctx.client.get_upload(upload_pks[0])
            except NotFound:
                return True  # consumed by the file copy
        return False

    async def _attach_values(self, pk: str, kinds: dict[str, str]) -> bool:
        """Sends the values not attached yet; True when it did, and recorded the display set importing (the case is
        then read again with that record). Works from ``self.case`` as ``_ensure_display_set`` left it: nothing
        was recorded for the case since it was read."""
        case = self.case
        items = [
            i
            for i in case.items
            if i.state == "uploaded"
            or (i.state == "planned" and (kinds[i.socket_slug] == VALUE or refers_to_image(i, kinds[i.socket_slug])))
        ]
        if not items:
            return False
        client = self.ctx.client
        if self._adopted_foreign:
            items = await self._keep_present_values(pk, items, kinds)
        planned: list[PlannedValue] = []
        # The uploads of every item that sends some, in one read of the ledger.
        uploads_of = await self.ctx.journal.read(
            self.ctx.journal.ledger.items_upload_pks,
            [i.id for i in items if kinds[i.socket_slug] != VALUE and not refers_to_image(i, kinds[i.socket_slug])],
        )
        for item in items:
            kind = kinds[item.socket_slug]
            if kind == VALUE:
                planned.append(
                    PlannedValue(item.socket_slug, kind, {"interface": item.socket_slug, "value": item.value})
                )
                continue
            if refers_to_image(item, kind):  # an image the server has: named by its API URL, no bytes (§12)
                planned.append(
                    PlannedValue(item.socket_slug, kind, {"interface": item.socket_slug, "image": item.value})
                )
                continue
            upload_pks = tuple(uploads_of.get(item.id, ()))
            urls = [client.upload_url(upload_pk) for upload_pk in upload_pks]
            body: dict[str, Any]
            if kind == FILE:
                body = {"interface": item.socket_slug, "user_upload": urls[0]}
                planned.append(PlannedValue(item.socket_slug, kind, body, upload_pks))
                continue
            if await is_image_set(self.ctx, item.socket_slug):  # user_uploads + image_name, no session (§10)
                planned.append(
                    PlannedValue(item.socket_slug, kind, await image_set_value(self, item, urls), upload_pks)
                )
                continue
            # No session recorded for the item in the case as read (nothing records one between that read and here):
            # a new session, posted aimed at the display set.
            if self.ctx.sessions_refused is None and not item.upload_session_pk:
                planned.append(targeted_value(item.socket_slug, pk, urls, upload_pks))  # one POST, no PATCH
                continue
            session = await self._own_session(item, list(upload_pks))  # recorded earlier: reused or settled
            if session is None:  # the session says the item is taken or failed: nothing to send
                continue
            if session:
                body = {"interface": item.socket_slug, "upload_session": session["api_url"]}
                planned.append(PlannedValue(item.socket_slug, kind, body, upload_pks, str(session["pk"])))
            else:
                body = {"interface": item.socket_slug, "user_uploads": urls}
                planned.append(PlannedValue(item.socket_slug, kind, body, upload_pks))
        if not planned:
            return False
        imports = sum(1 for value in planned if value.kind == IMAGE)
        between_images = self.imports.between_images(pk, kinds)
        if between_images is not None:
            # Staggered, the case hands its images over one at a time, each once the previous one has had an
            # import's time (``ImportWait._until_the_next_may_go``): about one of its imports is on the server at
            # any moment, so it holds one unit and hands it on from image to image. Holding one per image counted
            # images the server had not been given yet, and the gate starved the import workers (benchmarks/
            # README.md, "The import gate counts imports on the server": R1 84–100 s against 72–74 s).
            imports = min(imports, 1)
        if imports:
            self.import_units += await self.ctx.import_gate.acquire(imports, who=self.case.title)
        self.stop_point("before its values")  # the stop may have come while it waited for import slots
        crash_point("before-values-patch")
        # Never resent blindly: a lost answer is settled by looking at the display set and the uploads.
        await send_values(
            client,
            self.ctx.target,
            pk,
            planned,
            kinds,
            policy=self.ctx.config.retry,
            what=f"{self.case.title}: values PATCH",
            between_images=between_images,
            post_targeted=lambda value: self._post_targeted(value, items),
        )
        crash_point("after-values-patch")
        self._values_sent_at = time.monotonic()  # the import wait's first poll counts from here
        # One transaction: a crash leaves either nothing recorded (as a crash just after the PATCH: the next run
        # finds the values taken, _adopt_earlier_patch) or all of it.
        ledger = self.ctx.journal.ledger
        steps = [
            step(ledger.item_attached, next(i for i in items if i.socket_slug == value.socket_slug).id)
            for value in planned
        ]
        steps += [step(ledger.display_set_values_attached, case.id), step(ledger.display_set_importing, case.id)]
        # With the case read again in the same trip to the ledger (the import wait reads its attached items).
        self.case = await self.ctx.journal.record_then_read(
            steps[0], step(ledger.case_work, case.id), case=self.case.title, also=steps[1:]
        )
        crash_point("after-values-recorded")
        return True

    async def _post_targeted(self, value: PlannedValue, items: list[ItemWork]) -> None:
        item = next(i for i in items if i.socket_slug == value.socket_slug)
        session_pk = await post_targeted(
            self.ctx, self.sessions, value, item.id, case_title=self.case.title, policy=self.ctx.config.retry
        )
        if session_pk is not None:  # the staggered wait asks it whether the import failed
            self.session_of[value.socket_slug] = session_pk

    async def _keep_present_values(self, pk: str, items: list[ItemWork], kinds: dict[str, str]) -> list[ItemWork]:
        """An adopted display set keeps the values it has (never replaced unless asked): those items count as
        attached — the import poll then finds them present — and only the missing ones are sent."""
        present = present_sockets(await self.ctx.target.get(pk), kinds)
        kept = [i for i in items if i.socket_slug in present]
        for item in kept:
            self.ctx.journal.note("value_kept", case=self.case.title, socket=item.socket_slug, display_set=pk)
            await self.record(
                self.ctx.journal.ledger.item_attached, item.id
            )  # a value socket goes from planned straight there
        return [i for i in items if i.socket_slug not in present]

    async def _own_session(self, item: ItemWork, upload_pks: list[str]) -> dict[str, Any] | None:
        """The Queued upload session to name for this image item (recorded in the ledger first); ``{}`` to attach
        the uploads directly (the server refused sessions); None when the recorded session shows the item taken
        (recorded as attached) or failed (recorded as failed, with the server's message)."""
        ctx = self.ctx
        if ctx.sessions_refused is not None:
            return {}
        try:
            own = await session_for_item(ctx.client, ctx.journal, item.id, upload_pks, case_title=self.case.title)
        except SessionsRefused as refused:
            if ctx.sessions_refused is None:
                ctx.sessions_refused = str(refused)
                log.warning(
                    "the server refused to create an upload session (%s); attaching uploads directly "
                    "instead: import failures are then found by scanning the session list",
                    refused,
                )
                ctx.journal.note("upload_sessions_refused", reason=str(refused))
            return {}
        if own.failed is not None:
            await self.record(self.ctx.journal.ledger.item_failed, item.id, reason=f"{item.socket_slug}: {own.failed}")
            return None
        if own.taken:
            await self.record(self.ctx.journal.ledger.item_attached, item.id)
            return None
        return own.session

    async def _mark_importing(self) -> None:
        """The display set follows its items: once any value is attached, it is importing (also after a resume
        that found the values PATCH had been taken before the crash)."""
        case = await self._refresh()
        ledger = self.ctx.journal.ledger
        steps: list[Step[bool]] = []
        if case.display_set.state == "created":
            steps.append(step(ledger.display_set_values_attached, case.id))
        if case.display_set.state in ("created", "values_attached"):
            steps.append(step(ledger.display_set_importing, case.id))
        if steps:
            await self.record_together(steps)

    async def _finish(self) -> bool:
        case = await self._refresh()
        failed = [i for i in case.items if i.state == "failed"]
        if failed:
            reason = "; ".join(i.last_error or f"{i.socket_slug}: failed" for i in failed)
            await self._fail(reason)
            return False
        crash_point("after-import-seen")
        # One transaction: a crash leaves the case to be seen imported again, or done.
        ledger = self.ctx.journal.ledger
        await self.record_together([step(ledger.display_set_done, case.id), step(ledger.case_done, case.id)])
        self.ctx.stats.cases_done += 1
        crash_point("after-case-done")
        return True

"""Step 4 of a case (``gcbulk.engine.upload.case_upload``): waiting until Grand Challenge has imported its values.

Each image value is followed by its own upload session and by the display set (docs/gc-api.md §10): a session that ends
Failed fails its value with the server's message, a value in place is done, and the wait has a deadline and says
what it waits for. One ``ImportWait`` per ``CaseUpload``: it holds its own state (when each staggered image was
PATCHed, which imports the pacer heard of) and reads the case's through the properties below.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import anyio

from gcbulk.engine.gc.errors import Interrupted
from gcbulk.engine.upload.case_in_flight import CaseInFlight
from gcbulk.engine.upload.crashpoints import crash_point
from gcbulk.engine.upload.dicom_image_set import is_image_set, refused_reason, timeout_reason
from gcbulk.engine.upload.import_deadline import import_deadline
from gcbulk.engine.upload.imports import (
    SESSION_ENDED_BADLY,
    any_upload_gone,
    failed_session_message,
    present_sockets,
)
from gcbulk.engine.upload.server_limits import VOICE_SECONDS, WaitVoice, wait_log
from gcbulk.engine.upload.values_patch import FILE, IMAGE, PlannedValue
from gcbulk.state.records import CaseWork, ItemWork
from gcbulk.state.steps import step

if TYPE_CHECKING:
    from gcbulk.engine.upload.context import TransferContext
    from gcbulk.engine.upload.imports import UploadSessionIndex

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)

# How often, at least, a wait asks an image's own session whether its import failed (more often only when imports
# are slow anyway: twice the fastest one seen). A failure is then known within seconds, and most imports, done
# sooner, cost no session GET at all.
FAILURE_CHECK_SECONDS = 2.0
# A DICOM Image Set whose uploads the server deleted (its import ended) is given this long for its value to appear
# before it counts as refused: on success the value is linked around the time the uploads go (docs/gc-api.md §11).
IMAGE_SET_LINK_GRACE_SECONDS = 10.0
# Before the run has seen an import, how long a case waits for the scout's measurement before it polls for its own
# import: longer than most imports take on the server (seconds to a minute, docs/gc-api.md §10), far shorter than what
# a scout may wait out — a large image's import, a poll the server holds, its deadline.
SCOUT_PATIENCE_SECONDS = 90.0


class ImportWait:
    """The import wait of one case (``CaseInFlight``: the ``CaseUpload`` it reads its case, context and import units from)."""

    def __init__(self, upload: CaseInFlight) -> None:
        self._upload = upload
        # Staggered image values: when each was PATCHed (the pacer's import time counts from there), and which the
        # pacer has heard of already (each import is told once).
        self._patched_at: dict[str, float] = {}
        self._pacer_told: set[str] = set()
        # Staggered images handed on after the fastest recent import time without a poll: their import time is unknown.
        self._unmeasured: set[str] = set()
        # item id → when its DICOM Image Set's uploads were first seen gone: the import ended (see _image_set_refused)
        self.image_sets_consumed_at: dict[int, float] = {}

    # What it uses of its case (``CaseInFlight``), named here.
    @property
    def ctx(self) -> TransferContext:
        return self._upload.ctx

    @property
    def case(self) -> CaseWork:
        return self._upload.case

    @property
    def sessions(self) -> UploadSessionIndex:
        return self._upload.sessions

    @property
    def session_of(self) -> dict[str, str]:
        return self._upload.session_of

    @property
    def import_units(self) -> int:
        return self._upload.import_units

    @import_units.setter
    def import_units(self, units: int) -> None:
        self._upload.import_units = units

    async def _record(self, transition: Callable[P, T], *args: P.args, **fields: P.kwargs) -> T:
        return await self._upload.record(transition, *args, **fields)

    async def wait(self, pk: str, kinds: dict[str, str], *, values_sent_at: float | None) -> None:
        """Polls display set ``pk`` until every attached value is imported or failed, the deadline passed, or the run
        stops (``Interrupted``). ``values_sent_at``: when this run PATCHed the values (its first poll waits for them);
        None for a resumed case (it polls at once)."""
        try:
            await self._wait(pk, kinds, values_sent_at=values_sent_at)
        finally:
            self.ctx.import_pacer.scout_done(self)

    async def _wait(self, pk: str, kinds: dict[str, str], *, values_sent_at: float | None) -> None:
        ctx = self.ctx
        waiting = [i for i in self.case.items if i.state == "attached"]
        images_waiting = sum(1 for i in waiting if kinds[i.socket_slug] == IMAGE)
        # Resumed with imports in flight from an earlier run. A case already holding the whole limit (imports_in_flight
        # below its image count) does not ask for more: it would wait for itself. A case that sent its values in this
        # run took its units then (one for staggered images, which are handed over one by one: case_upload.py).
        if (
            values_sent_at is None
            and images_waiting > self.import_units
            and self.import_units < ctx.import_gate.ceiling
        ):
            self.import_units += await ctx.import_gate.acquire(images_waiting - self.import_units, who=self.case.title)
        started = time.monotonic()
        timeout = self._deadline_seconds(waiting)
        deadline = started + timeout
        # Reads ``waiting`` when it speaks: the values still missing at that moment.
        voice = WaitVoice(
            started,
            lambda so_far: wait_log.info(
                "%s waits %.0f s so far for the server's import of %s into %s %s (gives up after %.0f s)",
                self.case.title,
                so_far,
                ", ".join(i.socket_slug for i in waiting),
                ctx.target.ref.container_noun,  # display set / archive item
                pk,
                timeout,
            ),
            every=VOICE_SECONDS,  # this module's, read at each wait
        )
        delay = self._first_poll_delay()
        next_failure_check = started + self._failure_check_interval()
        polls = 0
        # Values this run has just sent cannot be imported yet: the first poll waits as a poll after a miss would
        # (a GET at once was a web worker's time spent on every case for nothing). A resumed case polls at once.
        sent_at = values_sent_at
        if waiting and sent_at is not None:
            # Only an image teaches the pacer (a file copy or a value says nothing of the import workers).
            if images_waiting and await self._typical_import_seconds(voice) is not None:
                delay = self._first_poll_delay()
            crash_point("during-import-poll")
            await self._pause(max(0.0, sent_at + delay - time.monotonic()), voice)
            if ctx.stopping.is_set():
                raise Interrupted(f"{self.case.title}: stopped while waiting for imports")
            delay = self._next_poll_delay(delay)
        while waiting:
            present = present_sockets(await ctx.target.get(pk), kinds)
            imported = [item for item in waiting if item.socket_slug in present]
            still = [item for item in waiting if item.socket_slug not in present]
            if imported:
                for item in imported:
                    self._imported(item, kinds, started)
                # What one poll shows imported, in one transaction: a crash leaves those items attached (polled
                # again) or done, as one transaction each did.
                await self._upload.record_together([step(ctx.journal.ledger.item_done, item.id) for item in imported])
                await self._items_finished(imported, kinds, consumed=True)
            progressed = len(still) < len(waiting)
            waiting = still
            if not waiting:
                break
            # A failed import never shows in the display set; its session says so. Asked only while the display set
            # shows no progress and at most every few expected import times: each GET holds a web worker (§10).
            if polls >= 1 and not progressed and time.monotonic() >= next_failure_check:
                waiting = await self._drop_failed_imports(waiting, kinds)
                next_failure_check = time.monotonic() + self._failure_check_interval()
            if waiting and time.monotonic() > deadline:
                ctx.import_pacer.timed_out()
                for item in waiting:
                    reason = (
                        f"{item.socket_slug}: the import did not finish within {timeout:.0f} s "
                        f"({_deadline_source(ctx.config.import_timeout)})"
                    )
                    if await is_image_set(ctx, item.socket_slug, kinds[item.socket_slug]):
                        reason = timeout_reason(item, ctx, timeout)
                    await self._record(self.ctx.journal.ledger.item_failed, item.id, reason=reason)
                    await self._item_finished(item, kinds, consumed=False)
                break
            if ctx.stopping.is_set():
                raise Interrupted(f"{self.case.title}: stopped while waiting for imports")
            crash_point("during-import-poll")
            await self._pause(delay, voice)  # a stop ends the wait at once: the next pass resumes the polling
            delay = self._next_poll_delay(delay)
            polls += 1

    async def _typical_import_seconds(self, voice: WaitVoice) -> float | None:
        """The typical import time lately. Before the run has seen an import, one case polls for the first (the
        pacer's scout) and this one, if it is not that case, waits for its measurement — speaking, and returning at
        a stop — instead of polling too, for ``SCOUT_PATIENCE_SECONDS`` at most: a scout with a large image, or
        whose poll the server holds, must not hold the run's other cases that long (``tests/engine/
        test_import_scout.py``). None: no import seen yet, and this case polls for its own."""
        pacer = self.ctx.import_pacer
        gives_up_at = time.monotonic() + SCOUT_PATIENCE_SECONDS
        while not pacer.scouts(self) and not self.ctx.stopping.is_set():
            if time.monotonic() >= gives_up_at:
                return None
            with anyio.move_on_after(max(0.0, min(voice.next_at, gives_up_at) - time.monotonic())):
                await self._first_import_or_stop()
            voice.speak_if_due(time.monotonic())
        return pacer.expected_seconds()

    async def _first_import_or_stop(self) -> None:
        async with anyio.create_task_group() as group:

            async def on_stop() -> None:
                await self.ctx.stopping.wait()
                group.cancel_scope.cancel()

            group.start_soon(on_stop)
            await self.ctx.import_pacer.first_import()
            group.cancel_scope.cancel()

    async def _pause(self, seconds: float, voice: WaitVoice) -> None:
        """Waits ``seconds`` between two polls, or until the run stops; a pause longer than ``VOICE_SECONDS`` speaks
        in its middle (with the server's imports taking minutes, a pause does too)."""
        until = time.monotonic() + seconds
        while not self.ctx.stopping.is_set():
            now = time.monotonic()
            if now >= until:
                return
            voice.speak_if_due(now)
            with anyio.move_on_after(min(until, voice.next_at) - now):
                await self.ctx.stopping.wait()

    def _first_poll_delay(self) -> float:
        """No poll before an import is likely done: 0.9 × the typical import time lately (the pacer's average),
        else the configured first delay. Every poll of a display set holds one of the server's web workers (§10).
        The factor must stay below 1: the average is measured through these polls, so an import done before the poll
        is found *at* it; at 1.0 × the average could only grow, polls drifted later and the import workers idled
        (R1 112 s against 82 s)."""
        expected = self.ctx.import_pacer.expected_seconds()
        return max(self.ctx.config.poll_initial_seconds, 0.9 * expected if expected else 0.0)

    def _next_poll_delay(self, delay: float) -> float:
        """After the first poll, short steps (a quarter of the typical import): an import found late holds its unit,
        and with it the next case's hand-over (the server's import workers would idle). Without a typical time yet,
        the configured back-off."""
        expected = self.ctx.import_pacer.expected_seconds()
        if expected:
            return max(self.ctx.config.poll_initial_seconds, 0.25 * expected)
        return min(delay * 1.5, self.ctx.config.poll_max_seconds)

    def _deadline_seconds(self, items: list[ItemWork]) -> float:
        """The wait's deadline: the job's ``import_timeout``, else from the largest value's size and the import times
        seen lately (``engine/upload/import_deadline.py``)."""
        size = max((sum(f.size for f in item.files) for item in items), default=0)
        return import_deadline(size, self.ctx.import_pacer.expected_seconds(), self.ctx.config.import_timeout)

    def _failure_check_interval(self) -> float:
        expected = self.ctx.import_pacer.expected_seconds() or 0.0
        return max(FAILURE_CHECK_SECONDS, 2 * expected)

    def _imported(self, item: ItemWork, kinds: dict[str, str], started: float) -> None:
        """Tells the import pacer how long this image took, from its own PATCH (staggered values are PATCHed one by
        one) or, for a value PATCHed before this wait began, from the wait's start."""
        if kinds[item.socket_slug] != IMAGE or item.socket_slug in self._pacer_told | self._unmeasured:
            return
        patched = self._patched_at.get(item.socket_slug, started)
        self.ctx.import_pacer.imported(time.monotonic() - patched)
        self._pacer_told.add(item.socket_slug)

    def between_images(self, pk: str, kinds: dict[str, str]) -> Callable[[PlannedValue], Awaitable[None]] | None:
        """For ``send_values``: waits until the value just PATCHed is in place (engine.stagger_image_values)."""
        if not self.ctx.config.stagger_image_values:
            return None
        self._patched_at, self._pacer_told, self._unmeasured = {}, set(), set()

        async def until_in_place(value: PlannedValue) -> None:
            await self._until_in_place(pk, value, kinds)

        return until_in_place

    async def _until_in_place(self, pk: str, value: PlannedValue, kinds: dict[str, str]) -> None:
        try:
            await self._until_the_next_may_go(pk, value, kinds)
        finally:
            self.ctx.import_pacer.scout_done(self)

    async def _until_the_next_may_go(self, pk: str, value: PlannedValue, kinds: dict[str, str]) -> None:
        """Waits until ``value``'s import has had the time the fastest recent import took (on an idle server it is in
        place; behind a queue it started before the next image can), or — before the run has seen
        an import — polls the display set until it is in place, its import failed (the import wait records that), the
        import timeout passed, or the run stops (the value's record then waits for the resume to find it)."""
        ctx = self.ctx
        patched = self._patched_at[value.socket_slug] = time.monotonic()
        timeout = self._deadline_seconds([i for i in self.case.items if i.socket_slug == value.socket_slug])
        deadline = patched + timeout
        voice = WaitVoice(
            patched,
            lambda so_far: wait_log.info(
                "%s waits %.0f s so far for the server's import of %s into %s %s before sending its next "
                "image (gives up after %.0f s)",
                self.case.title,
                so_far,
                value.socket_slug,
                ctx.target.ref.container_noun,
                pk,
                timeout,
            ),
            every=VOICE_SECONDS,
        )
        expected = await self._typical_import_seconds(voice)
        if ctx.stopping.is_set():
            raise Interrupted(f"{self.case.title}: stopped between the PATCHes of its images")
        if expected:
            # Once import times are known, the next image goes after the fastest import seen lately, without a poll
            # of its own: the wait after the last image then finds both in place with one GET of the display set
            # (each GET holds a web worker, docs/gc-api.md §10; polling here cost about two GETs per case). The images
            # still link apart: the server imports in the order it was handed them, so this one starts first and the
            # next has a whole import's work ahead of it after it starts; on an idle server this one is done by then.
            # Not the typical time: that includes the queue, and waiting it out held the next image back while the
            # import workers idled (benchmarks/README.md, "The import gate counts imports on the server").
            # A failure of this one is still read from its own session by the import wait. Its import time is not
            # told to the pacer: the poll that sees it was timed for the next one.
            self._unmeasured.add(value.socket_slug)
            gap = self.ctx.import_pacer.fastest_recent_seconds() or expected
            await self._pause(max(0.0, patched + min(gap, expected) - time.monotonic()), voice)
            if ctx.stopping.is_set():
                raise Interrupted(f"{self.case.title}: stopped between the PATCHes of its images")
            return
        # No import seen yet in this run: poll until this one is in place, which also teaches the pacer.
        delay = self._first_poll_delay()
        next_failure_check = patched + self._failure_check_interval()
        while True:
            await self._pause(delay, voice)
            if ctx.stopping.is_set():
                raise Interrupted(f"{self.case.title}: stopped between the PATCHes of its images")
            now = time.monotonic()
            if value.socket_slug in present_sockets(await ctx.target.get(pk), kinds):
                ctx.import_pacer.imported(time.monotonic() - patched)
                self._pacer_told.add(value.socket_slug)
                return
            if now > deadline:
                return  # the import wait fails it with the timeout's message
            session_pk = value.session_pk or self.session_of.get(value.socket_slug)
            if session_pk and now >= next_failure_check:
                if await failed_session_message(ctx.client, session_pk) is not None:
                    return  # the import wait records the server's message
                next_failure_check = time.monotonic() + self._failure_check_interval()
            delay = self._next_poll_delay(delay)

    async def _drop_failed_imports(self, waiting: list[ItemWork], kinds: dict[str, str]) -> list[ItemWork]:
        still = []
        for item in waiting:
            message = None
            if kinds[item.socket_slug] == IMAGE and await is_image_set(self.ctx, item.socket_slug):
                message = await self._image_set_refused(item)
            elif kinds[item.socket_slug] == IMAGE:
                session_pk = await self.ctx.journal.read(self.ctx.journal.ledger.item_upload_session, item.id)
                if session_pk:  # its own session: one GET, never a scan of the list (docs/gc-api.md §10)
                    message = await failed_session_message(self.ctx.client, session_pk)
                else:  # attached directly (an older gcbulk, or a server that refused sessions)
                    session = await self.sessions.find(
                        await self.ctx.journal.read(self.ctx.journal.ledger.item_upload_pks, item.id)
                    )
                    if session is not None and session.get("status") in SESSION_ENDED_BADLY:
                        message = session.get("error_message") or f"the import ended {session.get('status')}"
            if message is not None:
                if not message.startswith(f"{item.socket_slug}: "):
                    message = f"{item.socket_slug}: {message}"
                await self._record(self.ctx.journal.ledger.item_failed, item.id, reason=message)
                await self._item_finished(item, kinds, consumed=False)
            else:
                still.append(item)
        return still

    async def _image_set_refused(self, item: ItemWork) -> str | None:
        """A DICOM Image Set has no upload session; its uploads are the server's only trace. They are deleted when
        the import ends, worked or not (docs/gc-api.md §11): gone, and the value still missing a grace period later
        (``IMAGE_SET_LINK_GRACE_SECONDS``, or twice the import time seen lately), the server refused it."""
        seen_gone = self.image_sets_consumed_at.get(item.id)
        now = time.monotonic()
        if seen_gone is None:
            upload_pks = await self.ctx.journal.read(self.ctx.journal.ledger.item_upload_pks, item.id)
            if upload_pks and await any_upload_gone(self.ctx.client, tuple(upload_pks)):
                self.image_sets_consumed_at[item.id] = now
            return None
        grace = max(IMAGE_SET_LINK_GRACE_SECONDS, 2 * (self.ctx.import_pacer.expected_seconds() or 0.0))
        if now - seen_gone < grace:
            return None
        return refused_reason(item, self.ctx, now - seen_gone)

    async def _item_finished(self, item: ItemWork, kinds: dict[str, str], *, consumed: bool) -> None:
        await self._items_finished([item], kinds, consumed=consumed)

    async def _items_finished(self, items: list[ItemWork], kinds: dict[str, str], *, consumed: bool) -> None:
        """Gives back the gate units of ``items``, each gate once (on a shared ledger, one reservation each)."""
        images = min(sum(1 for item in items if kinds[item.socket_slug] == IMAGE), self.import_units)
        if images:
            self.import_units -= images
            await self.ctx.import_gate.release(images)
        # docs/gc-api.md §1: a successful import deletes its uploads; a failed one leaves them to the 24 h sweep.
        files = sum(len(item.files) for item in items if kinds[item.socket_slug] in (IMAGE, FILE))
        if consumed and files:
            await self.ctx.upload_gate.release(files)


def _deadline_source(configured: float | None) -> str:
    if configured is not None:
        return "engine.import_timeout"
    return "from the file's size and the server's recent import times; set engine.import_timeout to change it"

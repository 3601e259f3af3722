"""The server is the truth: compare what the ledger says this job made with the study's display sets as the server
has them, and re-queue what is gone (``gcbulk verify``, the start and the end of every ``gcbulk run``).

One listing of the study serves everything a pass needs from it: the check of the job's own display sets, the title
index by which a display set created just before a crash is found again, and the study's highest ``order`` above
which new display sets are placed (docs/gc-api.md §3, §10). The listing goes into the ledger as it streams in
(``StudyListing``), and those uses are queries of it there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from gcbulk.engine.gc.client import GrandChallengeClient, display_set_title, socket_slug_of
from gcbulk.engine.gc.errors import NotFound
from gcbulk.engine.gc.targets import Target
from gcbulk.engine.plan.titles import natural_title_key
from gcbulk.engine.upload.journal import Journal, LedgerRunner, step
from gcbulk.engine.upload.outcome import CaseResult
from gcbulk.engine.upload.server_limits import VOICE_SECONDS, WaitVoice, wait_log
from gcbulk.state.server_truth import ListedDisplaySet, RecordedCase

log = logging.getLogger(__name__)
# The server numbers display sets 10, 20, 30 … when no order is given (docs/gc-api.md §3); gcbulk keeps that spacing, so
# a person can still slot a display set in between by hand.
ORDER_STEP = 10


# Display sets are kept in the ledger this many at a time while a listing streams in.
_LISTING_BATCH = 1000


@dataclass(frozen=True)
class StudyListing:
    """One listing of the study, just made. The display sets it showed are in the ledger (``state/server_truth.py``,
    the connection's ``study_listing`` table), not in this process: a follow-mode run lists the whole study at every
    round, and a million display sets held here would be gigabytes over a migration (issue 31). A newer listing on
    the same ledger replaces the rows; what this holds was computed as the listing went by."""

    listed: int  # display sets (or archive items) seen
    highest_order: int  # the study's highest ``order``: new display sets go above it (docs/gc-api.md §3)


def listing_voice(target: Target, count: Callable[[], int], *, every: float) -> WaitVoice:
    """No silent listing: a study of 100 000 display sets is 100 pages, and a page of 1 000 is the server's slowest
    answer (docs/gc-api.md §10), so a listing can take minutes. Every ``every`` seconds of it, one line says what is
    being listed and how far it got (``count()``: the display sets seen so far)."""
    ref = target.ref
    return WaitVoice(
        time.monotonic(),
        lambda so_far: wait_log.info(
            "listing the %ss of %s: %d so far (%.0f s)", ref.container_noun, ref.label, count(), so_far
        ),
        every=every,
    )


async def read_study(target: Target, runner: LedgerRunner, *, voice_every: float = VOICE_SECONDS) -> StudyListing:
    """The target's display sets or archive items (``engine/gc/targets.py``), listed into the ledger a page at a
    time (docs/gc-api.md §3: ordered by order, then created; a row seen twice while others add display sets keeps
    its last state)."""
    await runner.run(runner.ledger.start_study_listing)
    batch: list[ListedDisplaySet] = []
    listed = highest_order = 0
    voice = listing_voice(target, lambda: listed, every=voice_every)
    async for display_set in target.iterate_containers():
        found = listed_display_set(display_set)
        batch.append(found)
        listed += 1
        voice.speak_if_due(time.monotonic())
        highest_order = max(highest_order, found.order)  # archive items have no order (§12): they count as 0
        if len(batch) >= _LISTING_BATCH:
            await runner.run(runner.ledger.add_to_study_listing, batch)
            batch = []
    await runner.run(runner.ledger.add_to_study_listing, batch)
    return StudyListing(listed=listed, highest_order=highest_order)


async def list_study(target: Target, *, voice_every: float = VOICE_SECONDS) -> list[ListedDisplaySet]:
    """The target's display sets, held in memory: for a command that lists once and ends (``gcbulk plan``, a copy's
    preview), not for a run that lists at every round (``read_study``)."""
    listed: list[ListedDisplaySet] = []
    voice = listing_voice(target, lambda: len(listed), every=voice_every)
    async for display_set in target.iterate_containers():
        listed.append(listed_display_set(display_set))
        voice.speak_if_due(time.monotonic())
    return listed


@dataclass
class Reconciliation:
    """What a comparison found: cases checked, and the titles re-queued with the reason."""

    checked: int = 0
    display_sets_gone: list[CaseResult] = field(default_factory=list)
    values_gone: list[CaseResult] = field(default_factory=list)

    @property
    def requeued(self) -> int:
        return len(self.display_sets_gone) + len(self.values_gone)

    def as_dict(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "display_sets_gone": len(self.display_sets_gone),
            "values_gone": len(self.values_gone),
        }


async def reconcile_with_server(
    target: Target, journal: Journal, study: StudyListing, *, skip_cases: Collection[int] = ()
) -> Reconciliation:
    """Every case with a recorded display set against ``study`` (the ledger holds what it listed): a display set
    that is gone is forgotten (a new one is created), a value that is gone is sent again, and a done case runs
    again. Each with a log line saying so.

    A difference is confirmed by a GET of that display set before anything is re-queued: a listing can skip a row
    (paging while others add display sets) and may be older than the last import."""
    found = Reconciliation()
    async for case in journal.runner.pages(journal.ledger.recorded_cases):
        if case.case_id in skip_cases:  # another worker holds it now: its own steps look at the server
            continue
        found.checked += 1
        on_server = case.listed_sockets
        if on_server is None or _missing(case, on_server):
            on_server = await _confirm(target, case.display_set_pk)
        if on_server is None:
            reason = (
                f"display set {case.display_set_pk} is gone from the server (deleted, or the server lost "
                "it); a new one will be created and its values sent again"
            )
            if await journal.record(
                step(journal.ledger.case_lost_on_server, case.case_id, display_set_gone=True, reason=reason),
                case=case.title,
            ):
                found.display_sets_gone.append(CaseResult(case.title, reason))
                log.warning("%s: %s; re-queued", case.title, reason)
            continue
        missing = _missing(case, on_server)
        if not missing:
            continue
        reason = f"display set {case.display_set_pk} no longer has a value for {', '.join(missing)}; sending it again"
        if await journal.record(
            step(
                journal.ledger.case_lost_on_server,
                case.case_id,
                display_set_gone=False,
                item_ids=[case.expected_values[slug] for slug in missing],
                reason=reason,
            ),
            case=case.title,
        ):
            found.values_gone.append(CaseResult(case.title, reason))
            log.warning("%s: %s; re-queued", case.title, reason)
    if found.checked:  # a clean comparison is a result too: the migration report shows the last one
        journal.note_fields("reconciled", {**found.as_dict(), "listed": study.listed})
    return found


def _missing(case: RecordedCase, sockets_on_server: frozenset[str]) -> list[str]:
    return sorted(slug for slug in case.expected_values if slug not in sockets_on_server)


async def _confirm(target: Target, pk: str) -> frozenset[str] | None:
    """The sockets holding a value in display set ``pk`` as the server has it now, or None: it is gone."""
    try:
        return listed_display_set(await target.get(pk)).sockets
    except NotFound:
        return None


def listed_display_set(display_set: dict[str, Any]) -> ListedDisplaySet:
    return ListedDisplaySet(
        pk=str(display_set["pk"]),
        title=display_set_title(display_set),
        order=int(display_set.get("order") or 0),
        sockets=frozenset(
            slug
            for value in display_set.get("values") or []
            if (slug := socket_slug_of(value))
            and any(value.get(name) is not None for name in ("image", "file", "value"))
        ),
    )


async def assign_create_orders(journal: Journal, study: StudyListing) -> int:
    """Fix the ``order`` of every display set not yet created: natural title order (case2 before case10, and Case3
    between them, as ``reorder --by natural-title`` orders), above both the study's highest order and any this job
    already fixed, so folder order holds and no two share an order (concurrent creates without one get duplicates on
    the real server, docs/gc-api.md §10)."""
    unordered = await journal.read(journal.ledger.display_sets_without_order)
    if not unordered:
        return 0
    base = max(study.highest_order, await journal.read(journal.ledger.highest_create_order))
    base -= base % ORDER_STEP  # the next multiple of ten above the highest, as the server would choose
    ranked = sorted(unordered, key=lambda row: (natural_title_key(row[1]), row[0]))
    orders = {case_id: base + ORDER_STEP * rank for rank, (case_id, _) in enumerate(ranked, start=1)}
    assigned = await journal.runner.run(
        journal.ledger.display_set_orders_assigned, orders
    )  # one event, not one per case
    if assigned:
        journal.note(
            "display_set_orders_assigned", count=assigned, lowest=min(orders.values()), highest=max(orders.values())
        )
    return assigned


@dataclass
class VerifyResult:
    """``gcbulk verify``: the ledger against the server, and this job's orphan uploads."""

    reconciliation: Reconciliation
    orphans_looked_for: int
    orphans_aborted: int

    @property
    def consistent(self) -> bool:
        return not self.reconciliation.requeued

    def as_dict(self) -> dict[str, object]:
        found = self.reconciliation
        return {
            **found.as_dict(),
            "requeued": [
                {"title": title, "reason": reason} for title, reason in found.display_sets_gone + found.values_gone
            ],
            "orphan_uploads_looked_for": self.orphans_looked_for,
            "orphan_uploads_aborted": self.orphans_aborted,
        }


# `gcbulk verify` holds no lease: every live lease is another worker's.
VERIFY_WORKER = "gcbulk-verify"


async def verify(client: GrandChallengeClient, journal: Journal, target: Target) -> VerifyResult:
    """One listing of the study, compared with the ledger (what is gone is re-queued for the next run), then the
    lost upload creates looked for and aborted (``engine/upload/orphans.py``). Cases that running workers hold
    (several workers on a PostgreSQL ledger) are theirs: left alone here."""
    from gcbulk.engine.upload.orphans import abort_orphan_uploads  # orphans imports nothing of this module

    held = await journal.read(journal.ledger.cases_leased_elsewhere, VERIFY_WORKER)
    found = await reconcile_with_server(target, journal, await read_study(target, journal.runner), skip_cases=held)
    sweep = await abort_orphan_uploads(client, journal, worker_id=VERIFY_WORKER)
    return VerifyResult(found, sweep.looked_for, len(sweep.aborted))

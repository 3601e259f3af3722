"""``gcbulk reorder``: give a study's display sets a new ``order``, in bulk, all or nothing, idempotently and resumably.

Planning is pure (``plan_by_title``, ``plan_from_csv``, ``check_plan``): it maps display sets to target orders and
never depends on their current orders, so a rerun computes the same plan. Before anything changes, every display set
is checked (``prepare_reorder``): the token's user must be an editor, and a display set with answers cannot change —
Grand Challenge refuses any change to it once it has answers (docs/gc-api.md §3; the server's
``CIVSetPostSerializerMixin.update`` checks ``is_editable`` first, for ``order`` too). When any target would fail
that way, nothing is changed and the reason is given, unless the user says to skip those (``--skip-answered``): then
their orders are fixed points and the new sequence is laid around them. A plan that would give two display sets one
order is refused, whatever the flags (the server lets duplicate orders through, docs/gc-api.md §10).

Running it (``run_reorder``) skips each display set that already has its target (nothing is PATCHed twice, a PATCH
whose answer was lost is found done) and PATCHes the others, a bounded number at a time (an anyio
``CapacityLimiter``), recording every step in the reorder ledger (``state/reorder_ledger.py``).
"""

from __future__ import annotations

import csv
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from gcbulk.engine.gc.client import GrandChallengeClient, display_set_title
from gcbulk.engine.gc.errors import ApiError, ConfigurationError, Disposition, classify
from gcbulk.engine.plan.titles import natural_title_key
from gcbulk.state.reorder_ledger import ReorderLedger

log = logging.getLogger(__name__)

# The server's own spacing when it picks orders (docs/gc-api.md §9: 10, 20, 30 …): room to slot a case in by hand later.
ORDER_STEP = 10
MAX_ORDER = 2147483647  # a PositiveIntegerField
LOCKED_BY_ANSWERS = "This display set cannot be changed, as answers for it already exist."
PK_COLUMNS = ("pk", "display_set", "display_set_pk")
BY_CHOICES = ("title", "natural-title")


@dataclass(frozen=True)
class DisplaySetOrder:
    pk: str
    title: str
    order: int | None


@dataclass(frozen=True)
class Target:
    pk: str
    title: str
    order: int


@dataclass(frozen=True)
class Kept:
    """A display set whose order stays as it is (a fixed point): it has answers and the user said to skip those."""

    pk: str
    title: str
    order: int | None


@dataclass(frozen=True)
class ReorderPlan:
    """What a reorder would do, checked against the server before anything changes."""

    targets: list[Target]  # the display sets that get an order (those already at it included)
    current: list[DisplaySetOrder]
    kept: list[Kept] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # why nothing may change (all or nothing)

    def changes(self) -> list[tuple[Target, int | None]]:
        """(target, current order) of every display set whose order changes."""
        orders = {ds.pk: ds.order for ds in self.current}
        return [(t, orders.get(t.pk)) for t in self.targets if orders.get(t.pk) != t.order]


@dataclass
class ReorderSummary:
    planned: int = 0
    already_in_place: int = 0
    patched: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # the plan was refused: nothing was changed
    dry_run: bool = False
    would_change: list[str] = field(default_factory=list)  # a dry run's changes, "title: 30 → 10"

    def lines(self) -> list[str]:
        if self.refused:
            return [
                "reorder refused: nothing was changed",
                *(f"  {reason}" for reason in self.refused),
            ]
        kept = [f"  kept at its order (has answers): {k.title or k.pk} ({k.order})" for k in self.kept]
        if self.dry_run:
            return [
                f"display sets in the plan: {self.planned} (dry run: nothing was changed)",
                f"  already at their target order: {self.already_in_place}",
                f"  would be reordered: {len(self.would_change)}",
                *(f"    {change}" for change in self.would_change),
                *kept,
            ]
        return [
            f"display sets in the plan: {self.planned}",
            f"  already at their target order: {self.already_in_place}",
            f"  reordered now: {self.patched}",
            f"  failed: {self.failed}",
            *(f"  failed: {failure}" for failure in self.failures),
            *kept,
        ]


def listing_entry(display_set: Mapping[str, Any]) -> DisplaySetOrder:
    order = display_set.get("order")
    return DisplaySetOrder(
        str(display_set["pk"]), display_set_title(display_set) or "", order if isinstance(order, int) else None
    )


def plan_by_title(
    display_sets: Sequence[DisplaySetOrder], *, natural: bool, fixed: Set[str] = frozenset()
) -> list[Target]:
    """Orders 10, 20, 30 … by title: plain (code point) or natural (``case2`` before ``case10``, case-insensitive).
    Display sets without a title go last, in their current order. The display sets in ``fixed`` (pks) keep their
    orders and get no target; the sequence skips the orders they hold, so no two display sets share one."""
    key = natural_title_key if natural else (lambda title: title)
    movable = [ds for ds in display_sets if ds.pk not in fixed]
    held = {ds.order for ds in display_sets if ds.pk in fixed}
    free_orders = (n * ORDER_STEP for n in itertools.count(1) if n * ORDER_STEP not in held)
    titled = sorted((ds for ds in movable if ds.title), key=lambda ds: (key(ds.title), ds.pk))
    untitled = sorted((ds for ds in movable if not ds.title), key=lambda ds: (ds.order is None, ds.order, ds.pk))
    return [Target(ds.pk, ds.title, order) for ds, order in zip([*titled, *untitled], free_orders, strict=False)]


def check_plan(
    targets: Sequence[Target],
    current: Sequence[DisplaySetOrder],
    answered: Set[str],
    *,
    skip_answered: bool,
) -> ReorderPlan:
    """All or nothing: the plan as it may run, or with ``refusals`` saying why nothing may change.

    A target for a display set with answers (``answered``) that is not at it already would fail on the server: the
    plan is refused, or with ``skip_answered`` that display set is kept at its order (a fixed point). A plan whose
    result gives two display sets one order is refused either way."""
    by_pk = {ds.pk: ds for ds in current}
    locked = [t for t in targets if t.pk in answered and by_pk[t.pk].order != t.order]
    refusals: list[str] = []
    kept: list[Kept] = []
    if locked and not skip_answered:
        refusals += [
            f"{_name(t.title, t.pk)} (order {by_pk[t.pk].order}) has answers: Grand Challenge does not change a "
            f"display set that has answers (docs/gc-api.md §3), so it cannot get order {t.order}"
            for t in locked
        ]
        refusals.append(
            "reorder before readers start, or run again with --skip-answered to keep those display sets at their "
            "orders and lay the others around them"
        )
        return ReorderPlan(list(targets), list(current), refusals=refusals)
    if locked:
        kept = [Kept(t.pk, t.title, by_pk[t.pk].order) for t in locked]
        skipped = {k.pk for k in kept}
        targets = [t for t in targets if t.pk not in skipped]
    final = {ds.pk: ds.order for ds in current} | {t.pk: t.order for t in targets}
    changing = {t.pk for t in targets if by_pk[t.pk].order != t.order}
    holders: dict[int | None, list[str]] = {}
    for pk, order in final.items():
        holders.setdefault(order, []).append(pk)
    for order, pks in sorted(holders.items(), key=lambda item: (item[0] is None, item[0] or 0)):
        if len(pks) > 1 and changing & set(pks):
            names = ", ".join(_name(by_pk[pk].title, pk) for pk in pks)
            refusals.append(f"order {order} would be held by {len(pks)} display sets ({names}); give each its own")
    return ReorderPlan(list(targets), list(current), kept=kept, refusals=refusals)


def _name(title: str, pk: str) -> str:
    return f"{title!r} (pk {pk})" if title else f"pk {pk}"


def plan_from_csv(path: Path, display_sets: Sequence[DisplaySetOrder]) -> list[Target]:
    """Targets from a CSV with an ``order`` column and a ``pk`` (or ``display_set``) or ``title`` column — such as
    the ``display_sets.csv`` of ``gcbulk export``, edited. Display sets it does not name keep their order.
    Raises ConfigurationError naming the line and what to fix."""
    by_pk = {ds.pk: ds for ds in display_sets}
    by_title: dict[str, list[DisplaySetOrder]] = {}
    for ds in display_sets:
        by_title.setdefault(ds.title, []).append(ds)
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as error:
        raise ConfigurationError(f"cannot read the order file {path}: {error.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        pk_column = next((c for c in PK_COLUMNS if c in columns), None)
        if "order" not in columns or (pk_column is None and "title" not in columns):
            raise ConfigurationError(
                f"{path}: the header must have an 'order' column and a 'pk' or 'title' column (found: "
                f"{', '.join(columns) or 'nothing'})"
            )
        targets: list[Target] = []
        seen: dict[str, int] = {}
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            display_set = _named(path, line, row, pk_column, by_pk, by_title)
            order = _order(path, line, row.get("order", ""))
            if display_set.pk in seen:
                raise ConfigurationError(
                    f"{path} line {line}: display set {display_set.pk} is already given an order on line "
                    f"{seen[display_set.pk]}; list each display set once"
                )
            seen[display_set.pk] = line
            targets.append(Target(display_set.pk, display_set.title, order))
    return targets


def _named(
    path: Path,
    line: int,
    row: dict[str, str],
    pk_column: str | None,
    by_pk: dict[str, DisplaySetOrder],
    by_title: dict[str, list[DisplaySetOrder]],
) -> DisplaySetOrder:
    if pk_column and row.get(pk_column):
        found = by_pk.get(row[pk_column])
        if found is None:
            raise ConfigurationError(f"{path} line {line}: no display set {row[pk_column]!r} in this reader study")
        return found
    title = row.get("title", "")
    matches = by_title.get(title, []) if title else []
    if len(matches) != 1:
        problem = "no display set has" if not matches else f"{len(matches)} display sets have"
        raise ConfigurationError(f"{path} line {line}: {problem} the title {title!r}; name it by its pk instead")
    return matches[0]


def _order(path: Path, line: int, raw: str) -> int:
    try:
        order = int(raw)
    except ValueError:
        raise ConfigurationError(f"{path} line {line}: order {raw!r} is not a whole number") from None
    # Order 0 makes the server pick "the next multiple of 10" (docs/gc-api.md §3): not what a user who wrote 0 means.
    if not 1 <= order <= MAX_ORDER:
        raise ConfigurationError(f"{path} line {line}: order {order} must be between 1 and {MAX_ORDER}")
    return order


async def list_display_sets(client: Any, study_pk: str) -> list[DisplaySetOrder]:
    return [listing_entry(ds) async for ds in client.iterate_display_sets(study_pk)]


async def answered_display_sets(client: GrandChallengeClient, pks: Iterable[str], *, concurrency: int) -> set[str]:
    """The display sets (pks) that have answers: one ``answers/?display_set=<pk>&limit=1`` each, a bounded number at
    a time (an editor sees every answer, docs/gc-api.md §4). One row per display set, where listing the study's
    answers would read every answer ever given."""
    answered: set[str] = set()
    limiter = anyio.CapacityLimiter(concurrency)

    async def check(pk: str) -> None:
        async with limiter:
            if await client.display_set_has_answers(pk):
                answered.add(pk)

    async with anyio.create_task_group() as group:
        for pk in pks:
            group.start_soon(check, pk)
    return answered


async def prepare_reorder(
    client: GrandChallengeClient,
    reader_study_slug: str,
    *,
    by: str | None,
    from_csv: Path | None,
    skip_answered: bool,
    concurrency: int = 8,
) -> ReorderPlan:
    """Everything checked before the first change: the token's user is an editor (else ConfigurationError), the
    study's display sets and which have answers, and the plan (``check_plan``)."""
    await client.require_editor(reader_study_slug, consequence="nothing was reordered")
    study = await client.reader_study_by_slug(reader_study_slug)
    current = await list_display_sets(client, str(study["pk"]))
    answered = await answered_display_sets(client, [ds.pk for ds in current], concurrency=concurrency)
    natural = by == "natural-title"
    targets = plan_from_csv(from_csv, current) if from_csv is not None else plan_by_title(current, natural=natural)
    plan = check_plan(targets, current, answered, skip_answered=skip_answered)
    if from_csv is None and plan.kept:
        # By title, every display set with answers is a fixed point (not only those that would have moved): the
        # sequence is laid around all of them, so none of them is handed a new order the second time round either.
        fixed = answered
        targets = plan_by_title(current, natural=natural, fixed=fixed)
        kept = [Kept(ds.pk, ds.title, ds.order) for ds in current if ds.pk in fixed]
        checked = check_plan(targets, current, answered, skip_answered=True)
        plan = ReorderPlan(checked.targets, current, kept=kept, refusals=checked.refusals)
    return plan


def dry_run_summary(plan: ReorderPlan) -> ReorderSummary:
    """What ``--dry-run`` shows: the plan's changes, nothing sent."""
    changes = plan.changes()
    return ReorderSummary(
        planned=len(plan.targets),
        already_in_place=len(plan.targets) - len(changes),
        kept=plan.kept,
        dry_run=True,
        would_change=[f"{t.title or t.pk}: {order} → {t.order}" for t, order in changes],
    )


async def run_reorder(
    client: Any,
    ledger: ReorderLedger,
    targets: Iterable[Target],
    current: Sequence[DisplaySetOrder],
    *,
    concurrency: int = 8,
) -> ReorderSummary:
    """PATCHes every target whose display set does not have its order yet; see the module docstring."""
    orders = {ds.pk: ds.order for ds in current}
    plan = list(targets)
    ledger.plan_reorder((t.pk, t.title, t.order, orders.get(t.pk)) for t in plan)
    rows = {row.display_set_pk: row for row in ledger.reorder_items()}
    summary = ReorderSummary(planned=len(plan))
    limiter = anyio.CapacityLimiter(concurrency)

    in_place = [target for target in plan if orders.get(target.pk) == target.order]
    with ledger.batch():
        for target in in_place:
            ledger.reorder_done(target.pk)
    summary.already_in_place = len(in_place)

    async def apply(target: Target) -> None:
        if rows[target.pk].state == "done":
            ledger.reorder_requeued(target.pk, f"its order is {orders.get(target.pk)} again, not {target.order}")
        async with limiter:
            ledger.reorder_patching(target.pk)
            try:
                await client.set_display_set_order(target.pk, target.order)
            except Exception as error:  # noqa: BLE001 - one display set fails, the others go on
                if classify(error) in (Disposition.INTERRUPTED, Disposition.STOP_RUN):
                    raise
                reason = _reason(error)
                ledger.reorder_failed(target.pk, reason)
                summary.failed += 1
                summary.failures.append(f"{target.title or target.pk}: {reason}")
                return
            ledger.reorder_done(target.pk)
            summary.patched += 1

    async with anyio.create_task_group() as group:
        for target in plan:
            if orders.get(target.pk) != target.order:
                group.start_soon(apply, target)
    return summary


def _reason(error: Exception) -> str:
    if isinstance(error, ApiError) and error.status == 400 and error.body == [LOCKED_BY_ANSWERS]:
        return (
            "Grand Challenge does not change a display set that already has answers (docs/gc-api.md §3); "
            "reorder before readers start"
        )
    return str(error)

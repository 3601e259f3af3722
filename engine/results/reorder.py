"""``gcbulk reorder``: give a study's display sets a new ``order``, in bulk, idempotently and resumably.

Planning is pure (``plan_by_title``, ``plan_from_csv``): it maps display sets to target orders and never depends on
their current orders, so a rerun computes the same plan. Running it (``run_reorder``) lists the display sets, skips
each one that already has its target (idempotent: nothing is PATCHed twice, a PATCH whose answer was lost is found
done), and PATCHes the others, a bounded number at a time (an anyio ``CapacityLimiter``), recording every step in
the reorder ledger (``state/reorder_ledger.py``).

Grand Challenge refuses any change to a display set once it has answers (docs/gc-api.md §3; the server's
``CIVSetPostSerializerMixin.update`` checks ``is_editable`` first, for ``order`` too): such display sets fail with a
message that says so, and the rest go on.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from natsort import natsort_keygen, ns

from gcbulk.engine.gc.client import display_set_title
from gcbulk.engine.gc.errors import ApiError, ConfigurationError, Disposition, classify
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


@dataclass
class ReorderSummary:
    planned: int = 0
    already_in_place: int = 0
    patched: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"display sets in the plan: {self.planned}",
            f"  already at their target order: {self.already_in_place}",
            f"  reordered now: {self.patched}",
            f"  failed: {self.failed}",
            *(f"  failed: {failure}" for failure in self.failures),
        ]


def listing_entry(display_set: Mapping[str, Any]) -> DisplaySetOrder:
    order = display_set.get("order")
    return DisplaySetOrder(
        str(display_set["pk"]), display_set_title(display_set) or "", order if isinstance(order, int) else None
    )


def plan_by_title(display_sets: Sequence[DisplaySetOrder], *, natural: bool) -> list[Target]:
    """Orders 10, 20, 30 … by title: plain (code point) or natural (``case2`` before ``case10``, case-insensitive).
    Display sets without a title go last, in their current order."""
    key = natsort_keygen(alg=ns.IGNORECASE) if natural else (lambda title: title)
    titled = sorted((ds for ds in display_sets if ds.title), key=lambda ds: (key(ds.title), ds.pk))
    untitled = sorted((ds for ds in display_sets if not ds.title), key=lambda ds: (ds.order is None, ds.order, ds.pk))
    return [Target(ds.pk, ds.title, (index + 1) * ORDER_STEP) for index, ds in enumerate([*titled, *untitled])]


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

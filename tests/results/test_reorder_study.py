"""``gcbulk reorder``: plans from titles or a CSV, bounded PATCHes, idempotent reruns, resumed interruptions."""

from __future__ import annotations

import csv
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.admin_answers import create_answer
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.gc.retry import RetryPolicy
from gcbulk.engine.results.reorder import (
    DisplaySetOrder,
    ReorderSummary,
    check_plan,
    plan_by_title,
    plan_from_csv,
    prepare_reorder,
    run_reorder,
)
from gcbulk.state.reorder_ledger import ReorderLedger
from tests.results.conftest import DISPLAY_SET_PATCH, World, eventually, faults

CURRENT = [
    DisplaySetOrder("p1", "case10", 10),
    DisplaySetOrder("p2", "case2", 20),
    DisplaySetOrder("p3", "Case1", 30),
    DisplaySetOrder("p4", "", 5),
    DisplaySetOrder("p5", "case3", 40),
]


def test_natural_title_order_puts_case2_before_case10_and_untitled_last() -> None:
    plan = plan_by_title(CURRENT, natural=True)
    assert [(t.title, t.order) for t in plan] == [("Case1", 10), ("case2", 20), ("case3", 30), ("case10", 40), ("", 50)]


def test_plain_title_order_is_by_code_point() -> None:
    assert [t.title for t in plan_by_title(CURRENT, natural=False)] == ["Case1", "case10", "case2", "case3", ""]


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_names_display_sets_by_pk_or_title(tmp_path: Path) -> None:
    plan = plan_from_csv(write_csv(tmp_path / "o.csv", "pk,title,order\np1,,7\n,case2,3\n"), CURRENT)
    assert [(t.pk, t.order) for t in plan] == [("p1", 7), ("p2", 3)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("title,position\ncase2,1\n", "must have an 'order' column and a 'pk' or 'title' column"),
        ("pk,order\nnope,10\n", "line 2: no display set 'nope' in this reader study"),
        ("title,order\nmissing,10\n", "line 2: no display set has the title 'missing'"),
        ("pk,order\np1,ten\n", "line 2: order 'ten' is not a whole number"),
        ("pk,order\np1,0\n", "line 2: order 0 must be between 1 and 2147483647"),
        ("pk,order\np1,10\np1,20\n", "line 3: display set p1 is already given an order on line 2"),
    ],
)
def test_bad_order_file_is_refused_with_the_line_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        plan_from_csv(write_csv(tmp_path / "o.csv", text), CURRENT)


def test_ambiguous_title_asks_for_the_pk(tmp_path: Path) -> None:
    twins = [DisplaySetOrder("a", "same", 10), DisplaySetOrder("b", "same", 20)]
    with pytest.raises(ConfigurationError, match="2 display sets have the title 'same'; name it by its pk"):
        plan_from_csv(write_csv(tmp_path / "o.csv", "title,order\nsame,5\n"), twins)


def test_missing_order_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the order file"):
        plan_from_csv(tmp_path / "absent.csv", CURRENT)


async def reorder(
    world: World,
    ledger_path: Path,
    *,
    by_csv: Path | None = None,
    concurrency: int = 4,
    skip_answered: bool = False,
    **client_options: object,
) -> ReorderSummary:
    """What ``gcbulk reorder`` does: check every display set, then run the plan unless it was refused."""
    async with world.client(**client_options) as client:
        plan = await prepare_reorder(
            client,
            "example-study",
            by=None if by_csv else "natural-title",
            from_csv=by_csv,
            skip_answered=skip_answered,
            concurrency=concurrency,
        )
        if plan.refusals:
            return ReorderSummary(refused=plan.refusals)
        with ReorderLedger.open(ledger_path, reader_study="example-study", base_url=client.base_url) as ledger:
            summary = await run_reorder(client, ledger, plan.targets, plan.current, concurrency=concurrency)
        summary.kept = plan.kept
        return summary


def orders(world: World) -> dict[str, int]:
    return {ds.title: ds.order for ds in world.store.display_sets.values()}


async def test_reorder_by_title_sets_every_order_and_a_rerun_patches_nothing(world: World, tmp_path: Path):
    world.add_display_sets(["case10", "case2", "case1", "case3"])

    first = await reorder(world, tmp_path / "r.sqlite")

    assert (first.patched, first.already_in_place, first.failed) == (3, 1, 0)  # case3 was already 4th
    assert orders(world) == {"case1": 10, "case2": 20, "case3": 30, "case10": 40}
    world.context.counters.reset()

    second = await reorder(world, tmp_path / "r.sqlite")

    assert (second.patched, second.already_in_place) == (0, 4)
    assert world.requests(DISPLAY_SET_PATCH) == 0


async def test_interrupted_reorder_resumes_and_repeats_at_most_the_patches_in_flight(world: World, tmp_path: Path):
    titles = [f"case{n}" for n in range(24, 0, -1)]
    world.add_display_sets(titles)
    targets = {f"case{n}": n * 10 for n in range(1, 25)}
    ledger_path = tmp_path / "r.sqlite"

    def at_target() -> int:
        return sum(1 for title, order in orders(world).items() if targets[title] == order)

    async with faults(world, {"match": "PATCH /api/v1/reader-studies/display-sets/*", "latency_seconds": 0.05}):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: reorder(world, ledger_path, concurrency=2))
            await eventually(lambda: at_target() >= 6, "six display sets reordered")
            group.cancel_scope.cancel()
    first_patches = world.requests(DISPLAY_SET_PATCH)
    assert at_target() < len(titles)
    with ReorderLedger.open(ledger_path, reader_study="example-study", base_url=world.emulator.base_url) as ledger:
        assert ledger.reorder_counts().get("done", 0) >= 4

    summary = await reorder(world, ledger_path, concurrency=2)

    assert summary.failed == 0 and at_target() == len(titles)
    assert world.requests(DISPLAY_SET_PATCH) <= len(titles) + 2  # only the two in flight may have gone twice
    assert summary.patched + summary.already_in_place == len(titles) and first_patches >= 6
    with ReorderLedger.open(ledger_path, reader_study="example-study", base_url=world.emulator.base_url) as ledger:
        assert ledger.reorder_counts() == {"done": len(titles)}


async def test_failed_patches_are_retried_on_the_next_run_only(world: World, tmp_path: Path):
    world.add_display_sets(["c", "b", "a"])
    no_retries = RetryPolicy(base_delay=0.001, attempts_per_item=0)

    async with faults(world, {"match": "PATCH /api/v1/reader-studies/display-sets/*", "status": 503, "skip": 1}):
        first = await reorder(world, tmp_path / "r.sqlite", concurrency=1, retry_policy=no_retries)

    assert (first.patched, first.failed) == (1, 1) and "answered 503" in first.failures[0]
    world.context.counters.reset()

    second = await reorder(world, tmp_path / "r.sqlite")

    assert (second.patched, second.already_in_place, second.failed) == (1, 2, 0)
    assert world.requests(DISPLAY_SET_PATCH) == 1
    assert orders(world) == {"a": 10, "b": 20, "c": 30}


async def _answer(world: World, display_set_pk: str) -> None:
    await create_answer(
        world.context,
        creator="reader1",
        question_pk=world.question("Bool").pk,
        display_set_pk=display_set_pk,
        answer=True,
    )


async def test_a_reorder_that_would_fail_on_an_answered_display_set_changes_nothing_and_says_why(
    world: World, tmp_path: Path
):
    answered, _ = world.add_display_sets(["z-answered", "a-free"])
    await _answer(world, answered.pk)

    summary = await reorder(world, tmp_path / "r.sqlite")

    assert summary.refused and summary.lines()[0] == "reorder refused: nothing was changed"
    assert f"'z-answered' (pk {answered.pk}) (order 10) has answers" in summary.refused[0]
    assert "--skip-answered" in summary.refused[-1]
    assert world.requests(DISPLAY_SET_PATCH) == 0
    assert orders(world) == {"z-answered": 10, "a-free": 20}
    assert not (tmp_path / "r.sqlite").exists()


async def test_skip_answered_keeps_their_orders_as_fixed_points_and_lays_the_others_around_them(
    world: World, tmp_path: Path
):
    # Answered display sets at 1010/1020/1030 and at 20 (issue 25): the new sequence hands none of them out again.
    late = world.add_display_sets(["b", "d", "f"], start_order=1010)
    early = world.add_display_sets(["x"], start_order=20)
    world.add_display_sets(["e", "c", "a", "g"], start_order=500)
    for display_set in [*late, *early]:
        await _answer(world, display_set.pk)

    summary = await reorder(world, tmp_path / "r.sqlite", skip_answered=True)

    assert summary.failed == 0 and sorted(k.title for k in summary.kept) == ["b", "d", "f", "x"]
    assert orders(world) == {"a": 10, "c": 30, "e": 40, "g": 50, "b": 1010, "d": 1020, "f": 1030, "x": 20}
    assert len(set(orders(world).values())) == len(orders(world))
    assert "  kept at its order (has answers): x (20)" in summary.lines()

    again = await reorder(world, tmp_path / "r.sqlite", skip_answered=True)  # a rerun: nothing left to change
    assert (again.patched, again.already_in_place, again.failed) == (0, 4, 0)


async def test_an_order_file_that_would_duplicate_an_answered_display_sets_order_is_refused(
    world: World, tmp_path: Path
):
    answered, free = world.add_display_sets(["answered", "free"])
    await _answer(world, answered.pk)
    order_file = write_csv(tmp_path / "o.csv", f"pk,order\n{free.pk},10\n")

    summary = await reorder(world, tmp_path / "r.sqlite", by_csv=order_file, skip_answered=True)

    assert summary.refused == [
        f"order 10 would be held by 2 display sets ('answered' (pk {answered.pk}), 'free' (pk {free.pk})); "
        "give each its own"
    ]
    assert world.requests(DISPLAY_SET_PATCH) == 0


def test_laying_around_fixed_points_never_hands_out_their_orders() -> None:
    current = [DisplaySetOrder(f"p{n}", f"t{n}", n * 10) for n in range(1, 8)]
    fixed = {"p2", "p5"}
    plan = plan_by_title(list(reversed(current)), natural=True, fixed=fixed)
    assert [(t.title, t.order) for t in plan] == [("t1", 10), ("t3", 30), ("t4", 40), ("t6", 60), ("t7", 70)]
    checked = check_plan(plan, current, fixed, skip_answered=False)
    assert checked.refusals == [] and checked.changes() == []


async def test_reorder_from_an_edited_export_of_display_sets(world: World, tmp_path: Path):
    world.add_display_sets(["first", "second", "third"])
    await world.export(tmp_path / "out")
    with (tmp_path / "out" / "display_sets.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["order"] = str(1000 - int(row["order"]))
    edited = tmp_path / "order.csv"
    with edited.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    summary = await reorder(world, tmp_path / "r.sqlite", by_csv=edited)

    assert summary.patched == 3
    assert orders(world) == {"first": 990, "second": 980, "third": 970}

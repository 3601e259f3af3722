"""Re-planning a tree against its ledger: unchanged keeps its state, changed is re-queued or reported, nothing lost."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gcbulk.engine.jobfile import JobConfig, load_job
from gcbulk.engine.plan.parts import part_ranges
from gcbulk.engine.plan.planner import plan_tree
from gcbulk.engine.service.plan_recording import PlanReport, plan_into_ledger
from gcbulk.state.ledger import Ledger
from gcbulk.state.replan import planning
from tests.planner.conftest import put, write_job

MiB = 1024**2
PART = 5 * MiB


@pytest.fixture
def ledger(tutorial: JobConfig, job_dir: Path) -> Iterator[Ledger]:
    with Ledger.open(job_dir / "job.ledger.sqlite", tutorial.binding) as opened:
        yield opened


def replan(config: JobConfig, ledger: Ledger, *, dry_run: bool = False) -> PlanReport:
    return plan_into_ledger(config, ledger, catalogue=None, dry_run=dry_run)


def upload_file(ledger: Ledger, file_id: int) -> None:
    """Record a whole upload of the file as the transfer engine would, parts with their MD5s."""
    work = next(f for case in ledger.cases_to_run() for item in case.items for f in item.files if f.id == file_id)
    data = work.path.read_bytes()
    upload_id = ledger.upload_creating(file_id, part_size=PART)
    ledger.upload_initialized(upload_id, pk=f"u-{file_id}", s3_upload_id="s3")
    for number, offset, length in part_ranges(len(data), PART):
        md5 = hashlib.md5(data[offset : offset + length]).hexdigest()
        ledger.part_sent(upload_id, number, size=length, etag=f'"{md5}"', md5=md5)
    ledger.upload_completed(upload_id)


def finish_case(ledger: Ledger, case_id: int) -> None:
    """Take a case all the way to done, as a successful run would."""
    case = ledger.case_work(case_id)
    ledger.case_started(case_id)
    ledger.display_set_creating(case_id)
    ledger.display_set_created(case_id, f"ds-{case_id}")
    for item in case.items:
        for file in item.files:
            upload_file(ledger, file.id)
        ledger.item_uploading(item.id)
        ledger.item_uploaded(item.id)
        ledger.item_attached(item.id)
    ledger.display_set_values_attached(case_id)
    for item in case.items:
        ledger.item_done(item.id)
    ledger.display_set_done(case_id)
    ledger.case_done(case_id)


def snapshot(ledger: Ledger) -> dict[str, list[tuple]]:
    return {
        table: [tuple(row) for row in ledger.db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()]
        for table in ("cases", "display_sets", "items", "files", "uploads", "parts")
    }


def test_replanning_an_unchanged_tree_changes_nothing(tutorial: JobConfig, ledger: Ledger) -> None:
    first = replan(tutorial, ledger)
    assert (first.diff.new_cases, first.diff.files, first.diff.files_to_upload) == (2, 4, 4)
    finish_case(ledger, 1)
    before = snapshot(ledger)
    again = replan(tutorial, ledger)
    assert again.diff.new_cases == 0 and again.diff.requeued == [] and again.diff.removed == []
    assert dict(again.diff.unchanged) == {"done": 1, "planned": 1}
    assert again.diff.files_to_upload == 3
    assert snapshot(ledger) == before
    assert ledger.plan_state == "complete"


def test_file_changed_before_upload_finished_is_requeued(tutorial: JobConfig, ledger: Ledger) -> None:
    replan(tutorial, ledger)
    file_id = ledger.case_work(2).items[1].files[0].id
    item_id = ledger.case_work(2).items[1].id
    upload_id = ledger.upload_creating(file_id, part_size=PART)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3")
    ledger.item_uploading(item_id)
    put(tutorial.case_root / "patient2" / "seg.mha", 77)
    report = replan(tutorial, ledger)
    assert report.diff.requeued == ["patient2"]
    assert ledger.upload(upload_id).state == "abandoned"
    item = ledger.case_work(2).items[1]
    assert (item.state, item.files[0].size, item.files[0].upload) == ("planned", 77, None)


def test_touched_file_with_the_same_content_keeps_its_state(tutorial: JobConfig, ledger: Ledger) -> None:
    replan(tutorial, ledger)
    finish_case(ledger, 1)
    ct = tutorial.case_root / "patient1" / "ct.mha"
    os.utime(ct, ns=(ct.stat().st_atime_ns, ct.stat().st_mtime_ns + 10**9))
    report = replan(tutorial, ledger)
    assert report.diff.changed_after_consumed == [] and report.diff.requeued == []
    assert ledger.case_work(1).items[0].files[0].mtime_ns == ct.stat().st_mtime_ns


def test_file_changed_after_grand_challenge_took_it_is_reported_not_resent(tutorial: JobConfig, ledger: Ledger) -> None:
    replan(tutorial, ledger)
    finish_case(ledger, 1)
    put(tutorial.case_root / "patient1" / "ct.mha", content=b"y" * 100)  # same size, new content and mtime
    report = replan(tutorial, ledger)
    assert report.diff.changed_after_consumed == [("patient1", "ct-image", "patient1/ct.mha: modified")]
    assert ledger.case_work(1).state == "done"


def test_new_case_is_added_and_a_vanished_one_reported_never_deleted(tutorial: JobConfig, ledger: Ledger) -> None:
    replan(tutorial, ledger)
    finish_case(ledger, 1)
    put(tutorial.case_root / "patient3" / "ct.mha")
    for path in (tutorial.case_root / "patient2").iterdir():
        path.unlink()
    (tutorial.case_root / "patient2").rmdir()
    report = replan(tutorial, ledger)
    assert report.diff.new_cases == 1
    assert report.diff.removed == [("patient2", "planned")]
    assert ledger.counts_by_state()["case"] == {"done": 1, "planned": 1, "vanished": 1}
    put(tutorial.case_root / "patient2" / "ct.mha")
    back = replan(tutorial, ledger)
    assert back.diff.removed == [] and ledger.case_work(2).state == "planned"


def test_done_case_that_vanished_is_reported_and_stays_done(tutorial: JobConfig, ledger: Ledger) -> None:
    replan(tutorial, ledger)
    finish_case(ledger, 1)
    (tutorial.case_root / "patient1" / "ct.mha").unlink()
    (tutorial.case_root / "patient1").rmdir()
    assert replan(tutorial, ledger).diff.removed == [("patient1", "done")]
    assert ledger.case_work(1).state == "done"


def test_new_file_for_a_done_case_reopens_it(tutorial: JobConfig, ledger: Ledger) -> None:
    replan(tutorial, ledger)
    finish_case(ledger, 1)
    put(tutorial.case_root / "patient1" / "seg.mha")
    report = replan(tutorial, ledger)
    assert report.diff.requeued == ["patient1"]
    work = ledger.case_work(1)
    assert (work.state, work.display_set.state, work.display_set.pk) == ("planned", "created", "ds-1")
    assert [(i.socket_slug, i.state) for i in work.items] == [("ct-image", "done"), ("airway-segmentation", "planned")]


def test_file_no_longer_there_withdraws_its_value(tutorial: JobConfig, ledger: Ledger) -> None:
    replan(tutorial, ledger)
    (tutorial.case_root / "patient2" / "seg.mha").unlink()
    report = replan(tutorial, ledger)
    assert report.diff.requeued == ["patient2"]
    assert [i.socket_slug for i in ledger.case_work(2).items] == ["ct-image"]
    assert ledger.counts_by_state()["item"] == {"planned": 2, "withdrawn": 1}


def test_failed_case_whose_file_was_fixed_is_retried(tutorial: JobConfig, ledger: Ledger) -> None:
    replan(tutorial, ledger)
    item_id = ledger.case_work(1).items[0].id
    ledger.case_started(1)
    ledger.item_failed(item_id, "import failed")
    ledger.case_failed(1, "import failed")
    put(tutorial.case_root / "patient1" / "ct.mha", 120)
    assert replan(tutorial, ledger).diff.requeued == ["patient1"]
    assert (ledger.case_work(1).state, ledger.case_work(1).items[0].state) == ("planned", "planned")


def test_blocked_case_is_planned_once_fixed(tutorial: JobConfig, ledger: Ledger) -> None:
    zero = put(tutorial.case_root / "patient1" / "extra.mha", content=b"")
    report = replan(tutorial, ledger)
    # Only patient1 is held back: the plan stays runnable for the others.
    assert not report.blocking and report.partly_blocked and report.diff.blocked == ["patient1"]
    assert ledger.plan_state == "complete" and [c.title for c in ledger.cases_to_run()] == ["patient2"]
    assert [row.title for row in ledger.cases_needing_attention()] == ["patient1"]
    assert ledger.cases_needing_attention()[0].findings[0]["code"] == "zero-bytes"
    zero.unlink()
    fixed = replan(tutorial, ledger)
    assert not fixed.blocking and ledger.plan_state == "complete"
    assert ledger.case_work(1).state == "planned"


def test_duplicate_titles_block_both_cases(job_dir: Path) -> None:
    put(job_dir / "cases" / "a" / "p1" / "ct.mha")
    put(job_dir / "cases" / "b" / "p1" / "ct.mha")
    config = load_job(write_job(job_dir, cases="depth = 2"))
    with Ledger.open(job_dir / "job.ledger.sqlite", config.binding) as ledger:
        report = replan(config, ledger)
        assert report.diff.duplicate_titles == ["p1"] and report.diff.blocked == ["p1"]
        assert ledger.counts_by_state()["case"] == {"blocked": 1}


def test_dry_run_reports_the_same_diff_and_writes_nothing(tutorial: JobConfig, ledger: Ledger) -> None:
    replan(tutorial, ledger)
    put(tutorial.case_root / "patient3" / "ct.mha")
    before = snapshot(ledger)
    events = len(ledger.events())
    dry = replan(tutorial, ledger, dry_run=True)
    assert dry.diff.new_cases == 1
    assert snapshot(ledger) == before and len(ledger.events()) == events
    assert replan(tutorial, ledger).diff.as_dict() == dry.diff.as_dict()


def test_an_interrupted_plan_leaves_the_job_planning(tutorial: JobConfig, ledger: Ledger) -> None:
    with pytest.raises(KeyboardInterrupt):
        with planning(ledger) as plan:
            plan.add(next(plan_tree(tutorial)))
            raise KeyboardInterrupt
    assert ledger.plan_state == "planning"
    replan(tutorial, ledger)
    assert ledger.plan_state == "complete"


def test_new_file_for_a_done_case_waits_while_blocked_then_reopens_it(tutorial: JobConfig, ledger: Ledger) -> None:
    replan(tutorial, ledger)
    finish_case(ledger, 1)
    put(tutorial.case_root / "patient1" / "seg.mha")
    zero = put(tutorial.case_root / "patient1" / "extra.pdf", content=b"")
    blocked = replan(tutorial, ledger)
    assert blocked.diff.blocked == ["patient1"] and ledger.case_work(1).state == "done"
    zero.unlink()
    assert replan(tutorial, ledger).diff.blocked == []
    work = ledger.case_work(1)
    assert (work.state, [i.state for i in work.items]) == ("planned", ["done", "planned"])

"""Which files a plan will record a new checksum for, asked of the ledger before the cases are recorded
(``PlanRecorder.files_to_fingerprint``), so the checksums can be computed ahead on other threads: new and changed
files only — never one the ledger holds unchanged, nor one Grand Challenge already took (that change is only
reported)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcbulk.engine.plan.planner import PlannedCase
from gcbulk.state.ledger import Ledger
from gcbulk.state.replan import planning
from tests.state.conftest import BINDING, MiB, planned_case, record

P1 = {"ct-image": [("ct.mha", 100)], "airway-segmentation": [("seg.mha", 50)]}
P2 = {"ct-image": [("ct.mha", 100)]}  # its CT attached to its display set: Grand Challenge has it


def must_not_read(path: Path, size: int) -> tuple[str, int]:
    raise AssertionError(f"asking which files to fingerprint read {path}")


def attach_the_only_file(ledger: Ledger, case_id: int) -> None:
    """Upload the case's single file and attach its item, as a run would: the item is consumed."""
    item = ledger.case_work(case_id).items[0]
    upload_id = ledger.upload_creating(item.files[0].id, part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    ledger.part_sent(upload_id, 1, size=100, etag='"e"')
    ledger.upload_completed(upload_id)
    ledger.item_uploading(item.id)
    ledger.item_uploaded(item.id)
    ledger.item_attached(item.id)


@pytest.fixture
def planned(ledger: Ledger) -> Ledger:
    record(ledger, [planned_case("p1", P1), planned_case("p2", P2)])
    attach_the_only_file(ledger, 2)
    return ledger


@pytest.mark.parametrize(
    ("tree_now", "named"),
    [
        pytest.param([planned_case("p1", P1), planned_case("p2", P2)], [], id="unchanged"),
        pytest.param([planned_case("p3", {"ct-image": [("ct.mha", 10)]})], [("p3/ct.mha", 10)], id="new case"),
        pytest.param([planned_case("p1", P1, mtime_ns=2)], [("p1/ct.mha", 100), ("p1/seg.mha", 50)], id="new mtimes"),
        pytest.param(
            [planned_case("p1", {**P1, "ct-image": [("ct.mha", 120)]})], [("p1/ct.mha", 120)], id="a file's new size"
        ),
        pytest.param(
            [planned_case("p1", {**P1, "ct-image": [("ct.mha", 100), ("ct-2.mha", 10)]})],
            [("p1/ct-2.mha", 10)],
            id="a new file of an item",
        ),
        pytest.param(
            [planned_case("p1", {**P1, "report": [("report.pdf", 7)]})], [("p1/report.pdf", 7)], id="a new socket"
        ),
        pytest.param(
            [planned_case("p2", {"ct-image": [("ct.mha", 120)]})], [], id="changed after Grand Challenge took it"
        ),
    ],
)
def test_the_files_a_plan_will_fingerprint_are_its_new_and_changed_ones(
    planned: Ledger, tree_now: list[PlannedCase], named: list[tuple[str, int]]
) -> None:
    with planning(planned, fingerprint=must_not_read) as plan:
        files = plan.files_to_fingerprint(tree_now)
    assert [(path.relative_to(BINDING.case_root).as_posix(), size) for path, size in files] == named


def test_files_under_the_size_asked_for_are_left_out(planned: Ledger) -> None:
    new = planned_case("p3", {"ct-image": [("ct.mha", 2 * MiB)], "airway-segmentation": [("seg.mha", 10)]})
    with planning(planned, fingerprint=must_not_read) as plan:
        assert [size for _, size in plan.files_to_fingerprint([new], min_size=MiB)] == [2 * MiB]
        # No file that big in the window: nothing to ask the ledger.
        assert plan.files_to_fingerprint([planned_case("p1", P1, mtime_ns=2)], min_size=MiB) == []


def test_a_plan_without_fingerprints_names_no_file(planned: Ledger) -> None:
    with planning(planned) as plan:
        assert plan.files_to_fingerprint([planned_case("p3")]) == []

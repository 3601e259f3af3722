"""`gcbulk report --format csv|json`: one row per case, with state, reason, display set, bytes and timings."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gcbulk.engine.cli import main
from gcbulk.engine.jobfile import load_job
from gcbulk.engine.plan.planner import PlannedCase, plan_tree
from gcbulk.state.ledger import Ledger, default_ledger_path
from gcbulk.state.replan import planning
from tests.container.conftest import write_job_file

START = datetime(2025, 11, 20, 10, 0, 0, tzinfo=UTC)


class SteppingClock:
    """Each reading is one second after the last: timings in the ledger become exact and predictable."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def job_with_history(tmp_path: Path) -> Path:
    """Three cases: patient1 done (display set ds-1, one part sent), patient2 failed with a reason, patient3 planned."""
    job_file = write_job_file(tmp_path)
    for n, sizes in ((1, (100, 50)), (2, (10, 20)), (3, (7, 8))):
        folder = tmp_path / "cases" / f"patient{n}"
        folder.mkdir(parents=True)
        (folder / "ct.mha").write_bytes(b"c" * sizes[0])
        (folder / "seg.mha").write_bytes(b"s" * sizes[1])
    job = load_job(job_file)
    with Ledger.open(
        default_ledger_path(job.job_file), job.binding, job_file=job.job_file, clock=SteppingClock()
    ) as ledger:
        with planning(ledger, rules=job.rules_dict(), job_file=job.job_file) as plan:
            for entry in plan_tree(job):
                if isinstance(entry, PlannedCase):
                    plan.add(entry)
            plan.finish()
        first, second = ledger.case_id_by_title("patient1"), ledger.case_id_by_title("patient2")
        ledger.case_started(first)
        work = ledger.case_work(first)
        ct = work.items[0].files[0]
        upload = ledger.upload_creating(ct.id, part_size=5 * 1024**2)
        ledger.upload_initialized(upload, pk="up-1", s3_upload_id="s3-1", created_at="2025-11-20T10:00:03.000000Z")
        ledger.part_sent(upload, 1, size=ct.size, etag='"e1"')
        ledger.display_set_creating(first)
        ledger.display_set_created(first, "ds-1")
        ledger.case_done(first)
        ledger.case_started(second)
        ledger.case_failed(second, "airway-segmentation: the image could not be imported")
    return job_file


def by_title(rows: list[dict]) -> dict[str, dict]:
    return {row["title"]: row for row in rows}


def test_the_json_report_has_state_reason_display_set_bytes_and_timings_per_case(
    job_with_history: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(job_with_history), "--format", "json"]) == 0
    rows = by_title(json.loads(capsys.readouterr().out))

    assert list(rows) == ["patient1", "patient2", "patient3"]
    done, failed, planned = rows["patient1"], rows["patient2"], rows["patient3"]
    assert (done["state"], done["display_set_pk"], done["files"], done["bytes"], done["bytes_sent"]) == (
        "done",
        "ds-1",
        2,
        150,
        100,
    )
    assert done["reason"] is None
    started, finished = datetime.fromisoformat(done["started"]), datetime.fromisoformat(done["finished"])
    assert started < finished and done["duration_seconds"] == (finished - started).total_seconds() > 0
    assert (failed["state"], failed["reason"]) == ("failed", "airway-segmentation: the image could not be imported")
    assert failed["finished"] is not None and failed["display_set_pk"] is None and failed["bytes"] == 30
    assert (planned["state"], planned["started"], planned["finished"], planned["duration_seconds"]) == (
        "planned",
        None,
        None,
        None,
    )


def test_the_csv_report_has_a_header_and_one_row_per_case_and_can_go_to_a_file(
    job_with_history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.csv"
    assert main(["report", str(job_with_history), "--format", "csv", "--out", str(out)]) == 0
    assert "3 case(s) written to" in capsys.readouterr().err
    rows = by_title(list(csv.DictReader(io.StringIO(out.read_text()))))
    assert rows["patient1"]["display_set_pk"] == "ds-1" and rows["patient1"]["bytes"] == "150"
    assert rows["patient2"]["reason"] == "airway-segmentation: the image could not be imported"
    assert rows["patient3"]["started"] == ""


def test_the_report_reads_the_ledger_while_a_run_holds_it(
    job_with_history: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = load_job(job_with_history)
    with Ledger.open(default_ledger_path(job.job_file), job.binding):  # the lock a running `gcbulk run` holds
        assert main(["report", str(job_with_history), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_a_report_without_a_ledger_says_to_plan_first_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job_file(tmp_path)
    assert main(["report", str(job)]) == 2
    assert "run 'gcbulk plan' for this job first" in capsys.readouterr().err


def test_an_empty_job_reports_an_empty_json_array(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = load_job(write_job_file(tmp_path))
    with Ledger.open(default_ledger_path(job.job_file), job.binding, job_file=job.job_file):
        pass
    assert main(["report", str(job.job_file), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []

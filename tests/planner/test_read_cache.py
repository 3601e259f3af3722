"""What a re-plan reads again (issue 31): the planner's own reads (MetaImage headers, JSON value files) and the content
checks' results are kept in the ledger under each file's path, size, mtime and inode; a file is read again when one
of those changed, and what was kept for files gone from the tree is forgotten."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from gcbulk.engine.cli import main
from gcbulk.engine.jobfile import load_job
from gcbulk.engine.plan.file_reads import MAX_VALUE_FILE, FileStamp, PlannerReads, ValueFileError
from gcbulk.engine.plan.metaimage import ReadBudget
from gcbulk.state.content_checks import ContentCheckRow, record_content_checks
from gcbulk.state.ledger import Ledger
from tests.imaging import make_mha
from tests.planner.conftest import put, put_mhd, write_job
from tests.planner.test_content_checks import RULES, _mask, _plan


def _case(folder: Path, age: bytes = b"63") -> None:
    make_mha(folder / "ct.mha", (2, 4, 4))
    _mask(folder / "seg.mha", np.array([[[0, 1], [1, 0]]], dtype=np.uint8))
    put(folder / "age.json", content=age)


def _rows(job_dir: Path, table: str) -> list[str]:
    with closing(sqlite3.connect(job_dir / "job.ledger.sqlite")) as db:
        return sorted(path for (path,) in db.execute(f"SELECT path FROM {table}"))


def _reads_line(out: str) -> str:
    return next(line.strip() for line in out.splitlines() if "image headers and value files:" in line)


def test_a_replan_of_an_unchanged_tree_reads_no_header_and_no_value_file(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    _case(cases_dir / "p1")
    _case(cases_dir / "p2")
    code, out = _plan(job_dir, capsys)
    assert code == 0, out
    # Per case: ct.mha's and seg.mha's headers and age.json's value.
    assert (
        _reads_line(out)
        == "image headers and value files: 6 files read · 0 unchanged since their last read (not read again)"
    )
    code, out = _plan(job_dir, capsys)
    assert code == 0, out
    assert (
        _reads_line(out)
        == "image headers and value files: 0 files read · 6 unchanged since their last read (not read again)"
    )
    assert "content checks: 0 files read · 4 unchanged" in out


def test_a_value_file_rewritten_is_read_again_and_its_new_value_planned(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    _case(cases_dir / "p1")
    assert _plan(job_dir, capsys)[0] == 0
    age = cases_dir / "p1" / "age.json"
    before = age.stat()
    age.write_bytes(b"64")  # same size; a new mtime
    code, out = _plan(job_dir, capsys, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["planner_reads"] == {"files_read": 1, "files_unchanged": 2}
    assert before.st_size == age.stat().st_size
    config = load_job(job_dir / "job.toml")
    with Ledger.open_readonly(job_dir / "job.ledger.sqlite", config.binding) as ledger:
        assert ledger.scalar("SELECT value FROM items WHERE socket_slug = 'patient-age'") == "64"


@pytest.mark.parametrize("change", ["mtime", "inode"])
def test_a_header_whose_file_changed_in_mtime_or_inode_alone_is_read_again(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture, change: str
) -> None:
    _case(cases_dir / "p1")
    assert _plan(job_dir, capsys)[0] == 0
    ct = cases_dir / "p1" / "ct.mha"
    old = ct.stat()
    if change == "mtime":
        os.utime(ct, ns=(old.st_atime_ns, old.st_mtime_ns + 1_000_000))
    else:  # the same bytes and mtime in a new file (a restore from a backup, a copy-and-rename)
        copy = ct.with_name("ct.mha.new")
        shutil.copy2(ct, copy)
        os.replace(copy, ct)
        os.utime(ct, ns=(old.st_atime_ns, old.st_mtime_ns))
        assert ct.stat().st_ino != old.st_ino and ct.stat().st_mtime_ns == old.st_mtime_ns
    code, out = _plan(job_dir, capsys)
    assert code == 0, out
    assert _reads_line(out).startswith("image headers and value files: 1 files read · 2 unchanged")
    assert "content checks: 1 files read · 1 unchanged" in out


def test_a_bad_header_still_blocks_its_case_when_its_verdict_comes_from_the_ledger(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    _case(cases_dir / "p1")
    bad = cases_dir / "p1" / "ct.mha"
    bad.write_bytes(
        b"ObjectType = Image\nNDims = 3\nDimSize = 0 4 4\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    )
    first = _plan(job_dir, capsys)
    second = _plan(job_dir, capsys)
    assert _reads_line(second[1]).startswith("image headers and value files: 0 files read")
    for code, out in (first, second):
        assert code == 1
        assert f"BLOCKING [bad-image-header] {bad}" in out and "DimSize = 0 4 4" in out


def test_what_was_read_from_files_gone_from_the_tree_is_forgotten(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    _case(cases_dir / "p1")
    _case(cases_dir / "p2")
    assert _plan(job_dir, capsys)[0] == 0
    assert len(_rows(job_dir, "file_reads")) == 6 and len(_rows(job_dir, "content_checks")) == 4
    shutil.rmtree(cases_dir / "p2")
    (cases_dir / "p1" / "age.json").unlink()
    code, out = _plan(job_dir, capsys)
    assert code == 0, out
    # p2's two headers, value and two content checks, and p1's value file.
    assert "forgotten: 6 remembered read results of files no longer in the tree" in out
    p1 = str(cases_dir / "p1")
    assert _rows(job_dir, "file_reads") == [f"{p1}/ct.mha", f"{p1}/seg.mha"]
    assert _rows(job_dir, "content_checks") == [f"{p1}/ct.mha", f"{p1}/seg.mha"]


def test_a_dry_run_forgets_nothing(job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture) -> None:
    _case(cases_dir / "p1")
    _case(cases_dir / "p2")
    assert _plan(job_dir, capsys)[0] == 0
    shutil.rmtree(cases_dir / "p2")
    code, out = _plan(job_dir, capsys, "--dry-run")
    assert code == 0, out
    assert "forgotten" not in out
    assert len(_rows(job_dir, "file_reads")) == 6 and len(_rows(job_dir, "content_checks")) == 4


def test_a_plan_without_the_content_checks_keeps_their_results_for_the_next_plan_with_them(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    _case(cases_dir / "p1")
    assert _plan(job_dir, capsys)[0] == 0
    # Offline without a sockets file: no content check runs, so none of their results is judged gone.
    assert main_offline(job_dir) == 0
    assert "forgotten" not in capsys.readouterr().out
    assert len(_rows(job_dir, "content_checks")) == 2
    assert "content checks: 0 files read · 2 unchanged" in _plan(job_dir, capsys)[1]


def test_rows_outside_the_case_root_are_never_forgotten(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    _case(cases_dir / "p1")
    assert _plan(job_dir, capsys)[0] == 0
    # A neighbouring folder whose name starts like the case root's: only the case root's own files are its plan's.
    elsewhere = f"{cases_dir}-other/p9/ct.mha"
    config = load_job(job_dir / "job.toml")
    with Ledger.open(job_dir / "job.ledger.sqlite", config.binding) as ledger:
        record_content_checks(
            ledger,
            [
                ContentCheckRow(
                    path=elsewhere,
                    socket="ct-image",
                    size=1,
                    mtime_ns=1,
                    inode=1,
                    definition="d",
                    findings="[]",
                    grid=None,
                )
            ],
        )
    shutil.rmtree(cases_dir / "p1")
    _case(cases_dir / "p3")
    assert _plan(job_dir, capsys)[0] == 0
    assert elsewhere in _rows(job_dir, "content_checks")
    assert not any("/p1/" in path for path in _rows(job_dir, "content_checks"))


def main_offline(job_dir: Path) -> int:
    return main(["plan", str(write_job(job_dir, rules=RULES)), "--offline"])


def test_an_mhd_header_is_read_once_and_still_takes_its_data_file_along(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    put_mhd(cases_dir / "p1", "ct")
    job = str(write_job(job_dir))
    outs = []
    for _ in range(2):
        assert main(["plan", job, "--offline"]) == 0
        outs.append(capsys.readouterr().out)
    assert _reads_line(outs[0]).startswith("image headers and value files: 1 files read · 0 unchanged")
    assert _reads_line(outs[1]).startswith("image headers and value files: 0 files read · 1 unchanged")
    config = load_job(job_dir / "job.toml")
    with Ledger.open_readonly(job_dir / "job.ledger.sqlite", config.binding) as ledger:
        assert [r["path"] for r in ledger.rows("SELECT path FROM files ORDER BY position")] == [
            "p1/ct.mhd",
            "p1/ct.zraw",
        ]


def test_a_value_file_that_grew_past_16_mib_since_the_walk_is_refused_after_reading_16_mib_and_a_byte(
    tmp_path: Path,
) -> None:
    grown = tmp_path / "age.json"
    grown.write_bytes(b"1" + b" " * (MAX_VALUE_FILE + 10))  # valid JSON, but over the server's request limit
    walked = FileStamp(str(grown), size=1, mtime_ns=0, inode=0)  # what the walk saw before it grew
    with pytest.raises(ValueFileError, match="over 16 MiB"):
        PlannerReads(ReadBudget()).value(walked)

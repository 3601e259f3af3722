"""Names the OS gives: folder and file names that are not UTF-8, a case folder reached twice, .mhd data elsewhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gcbulk.engine.cli import main
from gcbulk.engine.jobfile import load_job
from gcbulk.state.ledger import Ledger
from tests.planner.conftest import put, write_job


def _latin1_folder(cases_dir: Path) -> Path:
    raw = os.fsencode(cases_dir) + b"/p\xe9tient"  # 'pétient' in Latin-1: not valid UTF-8
    os.mkdir(raw)
    return Path(os.fsdecode(raw))


def test_a_case_folder_name_that_is_not_utf8_blocks_that_case_and_shows_it_escaped(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    put(cases_dir / "patient1" / "ct.mha")
    put(_latin1_folder(cases_dir) / "ct.mha")
    job = write_job(job_dir)
    assert main(["plan", str(job), "--offline"]) == 1
    out = capsys.readouterr().out
    assert "BLOCKING [bad-name]" in out and "cases/p\\xe9tient" in out
    assert "case folder name is not valid UTF-8 (shown with its bad bytes as \\xNN: p\\xe9tient)" in out
    assert "fix: rename the folder to UTF-8" in out
    assert "Blocked cases (1):\n  p\\xe9tient\n" in out
    with Ledger.open_readonly(job.with_name("job.ledger.sqlite"), load_job(job).binding) as ledger:
        assert ledger.counts_by_state()["case"] == {"blocked": 1, "planned": 1}
    assert main(["plan", str(job), "--offline", "--json"]) == 1  # re-planning is idempotent, JSON is valid
    report = json.loads(capsys.readouterr().out)
    assert (report["plan"]["new_cases"], report["plan"]["blocked"]) == (0, ["p\\xe9tient"])


def test_a_file_name_that_is_not_utf8_is_a_finding_with_the_name_escaped(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    put(cases_dir / "patient1" / "ct.mha")
    (cases_dir / "patient1").joinpath(os.fsdecode(b"s\xe9g.mha")).write_bytes(b"x" * 16)
    job = write_job(job_dir)
    assert main(["plan", str(job), "--offline"]) == 1
    out = capsys.readouterr().out
    assert "BLOCKING [bad-name]" in out and "patient1/s\\xe9g.mha" in out
    assert "file name cannot be uploaded: it is not valid UTF-8" in out


def test_a_case_folder_reached_twice_is_one_case_and_a_finding(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    put(cases_dir / "patient1" / "ct.mha")
    (cases_dir / "patient2").symlink_to(cases_dir / "patient1")
    job = write_job(job_dir)
    assert main(["plan", str(job), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "cases 1 · files 1" in out
    assert f"WARNING [case-alias] {cases_dir / 'patient2'}" in out
    assert "this is a symbolic link to case folder 'patient1'; a case is its real folder" in out


def test_a_bind_mount_like_second_path_to_a_case_outside_the_root_is_planned_once(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    put(job_dir / "elsewhere" / "ct.mha")  # data on another disk, reached only through links
    (cases_dir / "patient1").symlink_to(job_dir / "elsewhere")
    (cases_dir / "patient2").symlink_to(job_dir / "elsewhere")
    job = write_job(job_dir)
    assert main(["plan", str(job), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "cases 1 · files 1" in out
    assert f"WARNING [same-case-folder] {cases_dir / 'patient2'}" in out
    assert "this is the same folder as case 'patient1' (same device and inode" in out


def test_an_mhd_whose_data_file_is_outside_the_case_says_so(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    put(cases_dir / "shared" / "ct.zraw")
    put(cases_dir / "p1" / "ct.mhd", content=b"NDims = 3\nElementDataFile = ../shared/ct.zraw\n")
    put(cases_dir / "p2" / "ct.mhd", content=b"NDims = 3\nElementDataFile = /etc/passwd\n")
    job = write_job(job_dir, cases='ignore = ["*.zraw"]')
    assert main(["plan", str(job), "--offline"]) == 1
    out = capsys.readouterr().out
    assert out.count("which points outside the case folder") == 2
    assert ".mhd header names data file '../shared/ct.zraw', which points outside the case folder" in out
    assert "not there" not in out

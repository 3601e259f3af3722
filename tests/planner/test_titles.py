"""Titles without identifiers: a hashing template, or a mapping CSV folder → title."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gcbulk.engine.cli import main
from gcbulk.engine.jobfile import JobFileError, load_job
from tests.planner.conftest import plan, put, write_job


def test_a_sha256_template_gives_titles_without_the_folder_name(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "MRN-0012345" / "ct.mha")
    cases, _ = plan(load_job(write_job(job_dir, cases='title = "case-{folder|sha256:12}"')))
    expected = hashlib.sha256(b"MRN-0012345").hexdigest()[:12]
    assert [(c.title, c.folder) for c in cases] == [(f"case-{expected}", "MRN-0012345")]


def test_a_titles_csv_maps_folders_to_titles_and_a_missing_row_blocks_only_that_case(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    put(cases_dir / "MRN-001" / "ct.mha")
    put(cases_dir / "MRN-002" / "ct.mha")
    (job_dir / "titles.csv").write_text("folder,title\nMRN-001,case-a\n")
    job = write_job(job_dir, cases='titles_csv = "titles.csv"')
    assert main(["plan", str(job), "--offline"]) == 1
    out = capsys.readouterr().out
    assert f"BLOCKING [no-title] {cases_dir / 'MRN-002'}" in out
    assert f"case folder 'MRN-002' has no row in cases.titles_csv {job_dir / 'titles.csv'}" in out
    untitled = "untitled-" + hashlib.sha256(b"MRN-002").hexdigest()[:12]
    assert f"Blocked cases (1):\n  {untitled}\n" in out
    (job_dir / "titles.csv").write_text("folder,title\nMRN-001,case-a\nMRN-002,case-b\n")
    assert main(["plan", str(job), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "new 1 · re-queued 0 · unchanged 1 (done 0) · changed after upload 0 · removed 1 · blocked 0" in out


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("folder,name\n", "needs a header row with the columns folder and title"),
        ("folder,title\na,x\na,y\n", "line 3: folder 'a' is listed twice"),
        ("folder,title\na,x\nb,x\n", "line 3: title 'x' is also the title of 'a'"),
        ("folder,title\na,\n", "line 2: folder and title must both be filled in"),
    ],
)
def test_a_bad_titles_csv_names_the_line_and_what_to_do(job_dir: Path, rows: str, message: str) -> None:
    (job_dir / "titles.csv").write_text(rows)
    with pytest.raises(JobFileError, match=message):
        load_job(write_job(job_dir, cases='titles_csv = "titles.csv"'))

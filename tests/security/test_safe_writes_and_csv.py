"""Files gcbulk writes are never written through a planted link, are 0600, and their CSV cells do not run as
formulas in a spreadsheet (issue 14)."""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path

import pytest

from gcbulk.engine.results.csv_cells import SafeCsvWriter, spreadsheet_safe
from gcbulk.safe_files import UnsafeFileError, open_private_append, open_private_binary, replacing


@pytest.mark.parametrize("cell", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_cells_that_a_spreadsheet_would_run_get_an_apostrophe(cell: str) -> None:
    assert spreadsheet_safe(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["-3", "+1.5e3", "0.25", "patient 1", "", "a=b"])
def test_plain_numbers_and_text_stay_as_they_are(cell: str) -> None:
    assert spreadsheet_safe(cell) == cell


def test_the_csv_writer_escapes_every_cell() -> None:
    out = io.StringIO()
    SafeCsvWriter(out).writerow(["=cmd|' /C calc'!A0", 5, None, "-7"])
    assert next(csv.reader(io.StringIO(out.getvalue()))) == ["'=cmd|' /C calc'!A0", "5", "", "-7"]


def test_a_link_planted_at_a_final_name_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "answers.csv").symlink_to(victim)
    (out / ".answers.csv.partial").symlink_to(victim)  # the old fixed temporary name
    with replacing(out / "answers.csv", "w", encoding="utf-8") as handle:
        handle.write("new")
    assert victim.read_text() == "keep me"
    assert not (out / "answers.csv").is_symlink() and (out / "answers.csv").read_text() == "new"
    assert stat.S_IMODE((out / "answers.csv").stat().st_mode) == 0o600


def test_appending_or_resuming_through_a_planted_link_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "events.jsonl").symlink_to(victim)
    (tmp_path / "mask.part").symlink_to(victim)
    with pytest.raises(UnsafeFileError, match="is a symbolic link"):
        open_private_append(tmp_path / "events.jsonl")
    with pytest.raises(UnsafeFileError, match="is a symbolic link"):
        open_private_binary(tmp_path / "mask.part", append=True)
    assert victim.read_text() == "keep me"


def test_an_existing_world_readable_event_file_is_tightened_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("")
    os.chmod(path, 0o644)
    open_private_append(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

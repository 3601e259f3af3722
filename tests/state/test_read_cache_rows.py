"""The ledger's record of what planning read (``content_checks``, ``file_reads``), on SQLite and on PostgreSQL: one
row per file and socket (or kind of read), and the rows of files a plan did not see forgotten — only under its case
root."""

from __future__ import annotations

from gcbulk.state.content_checks import (
    ContentCheckRow,
    FileReadRow,
    content_check,
    file_read,
    forget_unseen,
    note_seen,
    record_content_checks,
    record_file_reads,
    start_seen,
)
from gcbulk.state.ledger import Ledger

ROOT = "/data/cases"


def _read(path: str, size: int = 10) -> FileReadRow:
    return FileReadRow(path=path, kind="mha-verdict", size=size, mtime_ns=1, inode=7, outcome="")


def test_a_file_read_again_replaces_its_row(ledger: Ledger) -> None:
    record_file_reads(ledger, [_read(f"{ROOT}/p1/ct.mha")])
    record_file_reads(ledger, [_read(f"{ROOT}/p1/ct.mha", size=11)])
    row = file_read(ledger, f"{ROOT}/p1/ct.mha", "mha-verdict")
    assert row is not None and row.size == 11
    assert file_read(ledger, f"{ROOT}/p1/ct.mha", "json-value") is None
    assert ledger.count("SELECT count(*) FROM file_reads") == 1


def test_rows_of_files_not_seen_are_forgotten_and_rows_outside_the_case_root_are_kept(ledger: Ledger) -> None:
    kept, gone, neighbour = f"{ROOT}/p1/ct.mha", f"{ROOT}/p2/ct.mha", f"{ROOT}-old/p2/ct.mha"
    record_file_reads(ledger, [_read(kept), _read(gone), _read(neighbour)])
    check = ContentCheckRow(
        path=gone, socket="ct-image", size=10, mtime_ns=1, inode=7, definition="d", findings="[]", grid=None
    )
    record_content_checks(ledger, [check])
    start_seen(ledger, "file_reads")
    start_seen(ledger, "content_checks")
    note_seen(ledger, "file_reads", [(kept, "mha-verdict"), (kept, "mha-verdict")])
    note_seen(ledger, "content_checks", [(gone, "ct-image")])
    assert forget_unseen(ledger, "file_reads", ROOT) == 1
    assert forget_unseen(ledger, "content_checks", ROOT) == 0
    assert sorted(r["path"] for r in ledger.rows("SELECT path FROM file_reads")) == sorted([kept, neighbour])
    assert content_check(ledger, gone, "ct-image") == check


def test_a_new_plan_starts_with_nothing_seen(ledger: Ledger) -> None:
    record_file_reads(ledger, [_read(f"{ROOT}/p1/ct.mha")])
    start_seen(ledger, "file_reads")
    note_seen(ledger, "file_reads", [(f"{ROOT}/p1/ct.mha", "mha-verdict")])
    start_seen(ledger, "file_reads")  # the next plan, on the same connection
    assert forget_unseen(ledger, "file_reads", ROOT + "/") == 1


def test_a_row_of_a_kind_of_read_no_longer_made_is_forgotten_though_its_file_is_still_there(ledger: Ledger) -> None:
    path = f"{ROOT}/p1/ct.mha"
    record_file_reads(
        ledger, [_read(path), FileReadRow(path=path, kind="mha-verdict-2", size=10, mtime_ns=1, inode=7, outcome="")]
    )
    start_seen(ledger, "file_reads")
    note_seen(ledger, "file_reads", [(path, "mha-verdict-2")])
    assert forget_unseen(ledger, "file_reads", ROOT) == 1
    assert file_read(ledger, path, "mha-verdict") is None and file_read(ledger, path, "mha-verdict-2") is not None

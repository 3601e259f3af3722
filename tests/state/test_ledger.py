"""The ledger as a file: private, bound to its job, one process at a time, no token, readable with sqlite-utils."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcbulk.state import ledger_core
from gcbulk.state.ledger import (
    Ledger,
    LedgerBindingError,
    LedgerError,
    LedgerLocked,
    LedgerMissing,
    default_ledger_path,
)
from gcbulk.state.migrations import LedgerTooNew
from tests.state.conftest import BINDING, planned_case, record, sync_of_each_commit

_OPEN_AND_WAIT = textwrap.dedent(
    """
    import sys
    from gcbulk.state.ledger import JobBinding, Ledger
    binding = JobBinding(reader_study=sys.argv[2], base_url=sys.argv[3], case_root=sys.argv[4])
    try:
        ledger = Ledger.open(sys.argv[1], binding)
    except Exception as exc:
        print(type(exc).__name__, exc, flush=True)
        sys.exit(3)
    print("opened", flush=True)
    sys.stdin.read()
    """
)


def _open_in_subprocess(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _OPEN_AND_WAIT, str(path), BINDING.reader_study, BINDING.base_url, BINDING.case_root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.mark.sqlite_only
def test_new_ledger_and_its_side_files_are_readable_by_the_owner_only(ledger: Ledger, ledger_path: Path) -> None:
    record(ledger, [planned_case("p1")])
    side_files = [ledger_path, Path(f"{ledger_path}-wal"), Path(f"{ledger_path}-shm"), Path(f"{ledger_path}.lock")]
    for path in side_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.just(UTC)))  # the ledger's clock is datetime.now(UTC)
def test_the_ledger_stamps_times_as_iso_8601_in_utc_to_the_microsecond(moment: datetime) -> None:
    """What every row's ``*_at`` column holds (the report, ``status`` and the orphan sweep's ``since`` compare them as
    text): ``2026-12-07T21:29:08.781385Z``."""
    stamp = ledger_core._iso(moment)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")) == moment  # the same instant


@pytest.mark.sqlite_only
def test_ledger_is_in_wal_mode_with_normal_sync(ledger: Ledger) -> None:
    assert ledger.db.journal_mode == "wal"
    assert ledger.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: safe against kill -9


@pytest.mark.sqlite_only
def test_what_only_the_ledger_names_on_the_server_commits_fsynced_and_the_rest_does_not(one_case: Ledger) -> None:
    """An upload's intent and its pk, and an item's session, survive power loss (else an orphan on the server);
    a part or a state change is recoverable from the server and commits without an fsync of its own."""
    ledger = one_case
    statements: list[str] = []
    ledger.db.conn.set_trace_callback(statements.append)
    item = ledger.case_work(1).items[0]
    upload_id = ledger.upload_creating(item.files[0].id, part_size=5 * 1024 * 1024)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    ledger.item_uploading(item.id)
    ledger.item_session_recorded(item.id, "session-1")
    ledger.db.conn.set_trace_callback(None)
    # upload_creating, upload_initialized, item_uploading, item_session_recorded: one commit each.
    assert sync_of_each_commit(statements) == ["FULL", "FULL", "NORMAL", "FULL"]
    assert ledger.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # back to NORMAL after each


@pytest.mark.parametrize(
    ("field", "other", "named"),
    [
        ("reader_study", "another-study", "reader study"),
        ("base_url", "https://other.example/api/v1/", "server"),
        ("case_root", "/elsewhere", "case root"),
    ],
)
def test_ledger_opened_for_another_job_is_refused(ledger_path: Path, field: str, other: str, named: str) -> None:
    Ledger.open(ledger_path, BINDING).close()
    with pytest.raises(LedgerBindingError, match=f"{named} is .*, this job has '{other}'.*--ledger"):
        Ledger.open(ledger_path, dataclasses.replace(BINDING, **{field: other}))
    # The refusal released the lock: the right job still opens it.
    Ledger.open(ledger_path, BINDING).close()


@pytest.mark.sqlite_only
def test_second_process_on_the_same_ledger_is_refused(ledger: Ledger, ledger_path: Path) -> None:
    child = _open_in_subprocess(ledger_path)
    output, _ = child.communicate(timeout=60)
    assert child.returncode == 3
    assert output.startswith("LedgerLocked")
    assert f"in use by another gcbulk process (pid {os.getpid()})" in output


@pytest.mark.sqlite_only
def test_second_open_in_the_same_process_is_refused_too(ledger: Ledger, ledger_path: Path) -> None:
    with pytest.raises(LedgerLocked):
        Ledger.open(ledger_path, BINDING)


@pytest.mark.sqlite_only
def test_lock_of_a_killed_process_is_released(ledger_path: Path) -> None:
    child = _open_in_subprocess(ledger_path)
    assert child.stdout is not None and child.stdout.readline().strip() == "opened"
    with pytest.raises(LedgerLocked):
        Ledger.open(ledger_path, BINDING)
    child.kill()  # SIGKILL: no cleanup runs in the child
    child.wait(timeout=60)
    Ledger.open(ledger_path, BINDING).close()


@pytest.mark.sqlite_only
def test_status_reads_a_ledger_a_running_job_holds(ledger: Ledger, ledger_path: Path) -> None:
    record(ledger, [planned_case("p1")])
    with Ledger.open_readonly(ledger_path, BINDING) as reader:
        assert reader.counts_by_state()["case"] == {"planned": 1}
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.db.execute("DELETE FROM cases")


def test_readonly_open_of_a_missing_ledger_says_to_plan_first(tmp_path: Path) -> None:
    with pytest.raises(LedgerMissing, match="run 'gcbulk plan'"):
        Ledger.open_readonly(tmp_path / "nothing.sqlite")


def test_readonly_open_checks_the_binding(ledger: Ledger, ledger_path: Path) -> None:
    with pytest.raises(LedgerBindingError):
        Ledger.open_readonly(ledger_path, dataclasses.replace(BINDING, reader_study="other"))


def test_ledger_in_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="folder .* does not exist"):
        Ledger.open(tmp_path / "nope" / "job.ledger.sqlite", BINDING)


def test_default_ledger_sits_next_to_the_job_file() -> None:
    assert default_ledger_path(Path("/jobs/study.toml")) == Path("/jobs/study.ledger.sqlite")


@pytest.mark.sqlite_only
def test_ledger_never_holds_the_token(ledger: Ledger, ledger_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "secret-token-value-4711"
    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", token)
    record(ledger, [planned_case("p1")])
    with pytest.raises(ValueError, match="must never hold credentials"):
        ledger.append_event("progress", authorization=f"Bearer {token}")
    with pytest.raises(ValueError, match="must never hold credentials"):
        ledger.append_event("progress", api_token=token)
    ledger.db.execute("PRAGMA wal_checkpoint(FULL)")
    for path in ledger_path.parent.iterdir():
        assert token.encode() not in path.read_bytes(), path
    assert token not in repr(ledger)


def test_events_are_append_only(ledger: Ledger) -> None:
    ledger.append_event("note", message="hello")
    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
        ledger.db.execute("UPDATE events SET kind = 'rewritten'")
    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
        ledger.db.execute("DELETE FROM events")
    assert ledger.events()[-1]["data"] == {"message": "hello"}


@pytest.mark.sqlite_only
def test_ledger_is_readable_with_the_sqlite_utils_command_line(ledger: Ledger, ledger_path: Path) -> None:
    record(ledger, [planned_case("p1", values={"patient-age": "63"})])
    sqlite_utils = Path(sys.executable).with_name("sqlite-utils")
    result = subprocess.run(
        [str(sqlite_utils), "rows", str(ledger_path), "items"], capture_output=True, text=True, check=True, timeout=60
    )
    rows = json.loads(result.stdout)
    assert {(row["socket_slug"], row["value"]) for row in rows} == {("ct-image", None), ("patient-age", "63")}


@pytest.mark.sqlite_only
def test_ledger_written_by_a_newer_gcbulk_is_refused(ledger_path: Path) -> None:
    with Ledger.open(ledger_path, BINDING) as ledger:
        ledger.db["_sqlite_migrations"].insert(
            {"migration_set": "gcbulk-ledger", "name": "m999_from_the_future", "applied_at": "2030-01-01"}
        )
    with pytest.raises(LedgerTooNew, match="newer gcbulk.*m999_from_the_future.*upgrade"):
        Ledger.open(ledger_path, BINDING)
    Ledger.open(ledger_path.with_name("fresh.sqlite"), BINDING).close()  # the lock was released by the refusal
    with pytest.raises(LedgerTooNew):
        Ledger.open(ledger_path, BINDING)

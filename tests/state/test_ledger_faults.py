"""A ledger that cannot be trusted or written is a configuration error with what to do — exit 2 from every command,
never a raw sqlite3 traceback, never "Nothing needs attention" — and a bug exits with a code of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gcbulk.engine.cli import EXIT_CRASH, main
from gcbulk.engine.upload.journal import LedgerRunner
from gcbulk.state.ledger import Ledger, LedgerDiskFull, LedgerLocked, LedgerNotALedger
from tests.engine.conftest import make_tutorial_tree
from tests.state.conftest import BINDING

REPO = Path(__file__).parents[2]


@pytest.fixture
def job(tmp_path: Path) -> Path:
    make_tutorial_tree(tmp_path / "cases", 2)
    job_file = tmp_path / "job.toml"
    job_file.write_text(
        'reader_study = "s"\nbase_url = "https://gc.example/api/v1/"\ncase_root = "cases"\n\n'
        '[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n'
    )
    assert main(["plan", str(job_file), "--offline"]) == 0
    return job_file


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(4096 + 100, min(len(data), 4096 * 6), 7):  # pages after the header: tables and indexes
        data[offset] = 0xA5
    path.write_bytes(bytes(data))


def _checkpointed(job: Path) -> Path:
    ledger = job.with_name("job.ledger.sqlite")
    with Ledger.open_readonly(ledger) as readonly:
        readonly.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return ledger


@pytest.mark.parametrize("command", ["status", "report", "run", "plan"])
def test_a_damaged_ledger_exits_2_from_every_command_saying_how_to_recover(
    job: Path, command: str, capsys, monkeypatch
) -> None:
    _corrupt(_checkpointed(job))
    argv = {"report": ["report", str(job), "--format", "json"], "plan": ["plan", str(job), "--offline"]}.get(
        command, [command, str(job)]
    )
    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", "not-used-before-the-ledger-is-opened")

    assert main(argv) == 2

    err = capsys.readouterr().err
    assert ("is damaged" in err or "is not a gcbulk ledger" in err) and "Nothing needs attention" not in err
    assert "Traceback" not in err


def test_a_file_that_is_not_a_ledger_is_named_as_such(job: Path, capsys) -> None:
    ledger = job.with_name("job.ledger.sqlite")
    for leftover in ledger.parent.glob("job.ledger.sqlite-*"):
        leftover.unlink()
    ledger.write_text("these are my notes, not a database\n" * 200)

    assert main(["status", str(job)]) == 2
    assert "is not a gcbulk ledger" in capsys.readouterr().err
    with pytest.raises(LedgerNotALedger):
        Ledger.open(ledger, BINDING)


def test_two_names_for_one_ledger_share_its_lock(tmp_path: Path) -> None:
    real = tmp_path / "real" / "job.ledger.sqlite"
    real.parent.mkdir()
    (tmp_path / "alias").symlink_to(real.parent)
    with Ledger.open(real, BINDING):
        with pytest.raises(LedgerLocked, match="in use by another gcbulk process"):
            Ledger.open(tmp_path / "alias" / "job.ledger.sqlite", BINDING)


async def test_a_full_disk_while_running_is_a_ledger_error_that_says_nothing_was_half_written(tmp_path: Path) -> None:
    path = tmp_path / "job.ledger.sqlite"
    async with LedgerRunner(path, BINDING) as runner:
        pages = await runner.with_ledger(lambda ledger: ledger.db.execute("PRAGMA page_count").fetchone()[0])
        # SQLite's own quota stands in for a full disk: the same error ("database or disk is full") at the same place.
        await runner.with_ledger(lambda ledger: ledger.db.execute(f"PRAGMA max_page_count = {pages}"))
        with pytest.raises(LedgerDiskFull, match="nothing was half-written"):
            await runner.run(runner.ledger.append_event, "test", note="x" * 200_000)
    with Ledger.open(path, BINDING) as reopened:
        assert [e for e in reopened.events() if e["kind"] == "test"] == []


def test_a_bug_exits_with_its_own_code_and_never_prints_the_token(tmp_path: Path) -> None:
    token = "tok-" + "s3cr3t" * 6
    # No input makes a command raise unexpectedly on purpose, so the test injects a bug with a sitecustomize hook.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import gcbulk.engine.cli.status as s\n"
        f"def boom(args): raise RuntimeError('unexpected: Bearer {token}')\n"
        "s.run = boom\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{REPO}", "GRAND_CHALLENGE_AUTHORIZATION": token}
    result = subprocess.run(
        [sys.executable, "-m", "gcbulk", "status", "job.toml"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == EXIT_CRASH
    assert "internal error (RuntimeError: unexpected: Bearer [REDACTED]); this is a bug" in result.stderr
    assert token not in result.stderr + result.stdout

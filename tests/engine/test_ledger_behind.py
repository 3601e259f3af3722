"""A ledger that went back in time (its -wal file deleted after a kill -9) is noticed: the command says what
happened and how to recover, exit 2, instead of blocking the job's own cases as display sets someone else made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.upload.crashpoints import ENV_VAR
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.engine.test_run_command import REPO, gcbulk, gcbulk_env


def test_a_deleted_wal_after_kill_9_is_named_with_how_to_recover_and_adopting_finishes_the_job(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    job = write_job(tmp_path, threaded_emulator)
    token = threaded_emulator.tokens["editor"]
    assert gcbulk("plan", str(job), token=token).returncode == 0  # a clean close: the plan is in the database file
    killed = subprocess.run(
        [sys.executable, "-m", "gcbulk", "run", str(job), "--metrics-address", "off"],
        env=gcbulk_env(token) | {ENV_VAR: "after-case-done"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert killed.returncode == -9, killed.stderr
    ledger = tmp_path / "job.ledger.sqlite"
    os.remove(f"{ledger}-wal")  # what a careless cleanup or a lost volume does after the crash
    Path(f"{ledger}-shm").unlink(missing_ok=True)
    made = {ds.title for ds in threaded_emulator.context.store.display_sets.values()}
    assert made  # the run had created display sets the ledger no longer knows

    for command in ("plan", "run"):
        result = gcbulk(command, str(job), token=token)
        assert result.returncode == 2, result.stderr
        assert "is behind its event log" in result.stderr and "--adopt-existing" in result.stderr, result.stderr
        assert "lost its latest writes" in result.stderr
    assert {ds.title for ds in threaded_emulator.context.store.display_sets.values()} == made  # nothing new sent

    adopted = gcbulk("run", str(job), "--adopt-existing", token=token)
    assert adopted.returncode == 0, adopted.stderr
    titles = sorted(ds.title for ds in threaded_emulator.context.store.display_sets.values())
    assert titles == ["patient1", "patient2", "patient3"]  # one display set per case, none twice

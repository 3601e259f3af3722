"""``gcbulk run`` with cases that cannot go: a blocked case is skipped and listed, the others run; ``--strict`` holds
back all; ``run`` notices new and vanished case folders without ``--replan``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from gcbulk.emulator.context import EmulatorConfig
from gcbulk.emulator.server import RunningEmulator

from tests.engine.conftest import make_tutorial_tree, write_job
from tests.engine.test_run_command import gcbulk

GLOBS = ('[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n\n'
         '[[rules]]\nglob = "seg.mha"\nsocket = "airway-segmentation"\nrequired = true\n')


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    return EmulatorConfig(data_dir=tmp_path / "emulator", import_delay_seconds=0.05)


def _titles(emulator: RunningEmulator) -> list[str]:
    return sorted(ds.title for ds in emulator.context.store.display_sets.values())


def test_a_blocked_case_is_skipped_and_listed_while_the_others_run_exit_1(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    (tmp_path / "cases" / "patient2" / "seg.mha").unlink()  # required: patient2 is blocked
    raw = os.fsencode(tmp_path / "cases") + b"/p\xe9tient"  # a folder name that is not UTF-8: blocked, no crash
    os.mkdir(raw)
    (Path(os.fsdecode(raw)) / "ct.mha").write_bytes(b"x" * 64)
    job = write_job(tmp_path, threaded_emulator, rules=GLOBS)
    token = threaded_emulator.tokens["editor"]
    run = gcbulk("run", str(job), token=token)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "2 case(s) blocked by their findings and skipped" in run.stderr
    assert "  patient2\n" in run.stderr and "  p\\xe9tient\n" in run.stderr
    assert "no file for required socket 'airway-segmentation'" in run.stderr
    assert "cases 2/2 done, 0 failed" in run.stderr
    assert _titles(threaded_emulator) == ["patient1", "patient3"]

    status = gcbulk("status", str(job), token=token)
    assert status.returncode == 1
    assert "blocked 2, done 2" in status.stdout
    assert "blocked  patient2: no file for required socket 'airway-segmentation'" in status.stdout

    strict = gcbulk("run", str(job), "--strict", token=token)
    assert strict.returncode == 2
    assert "(--strict: any blocking finding holds back every case)" in strict.stderr

    make_tutorial_tree(tmp_path / "cases", 2)  # patient2's segmentation is back
    shutil.rmtree(raw)
    fixed = gcbulk("run", str(job), token=token)
    assert fixed.returncode == 0, fixed.stderr
    assert _titles(threaded_emulator) == ["patient1", "patient2", "patient3"]


def test_run_picks_up_new_and_vanished_case_folders_without_replan(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    job = write_job(tmp_path, threaded_emulator, rules=GLOBS)
    token = threaded_emulator.tokens["editor"]
    assert gcbulk("run", str(job), token=token).returncode == 0
    make_tutorial_tree(tmp_path / "cases", 3)  # patient3 is new
    for path in (tmp_path / "cases" / "patient1").iterdir():
        path.unlink()
    (tmp_path / "cases" / "patient1").rmdir()
    second = gcbulk("run", str(job), token=token)
    assert second.returncode == 0, second.stderr
    assert "new 1 · re-queued 0 · unchanged 1 (done 1)" in second.stderr
    assert "Removed from the tree (nothing is deleted on Grand Challenge) (1):\n  patient1 (was done)" in second.stderr
    assert _titles(threaded_emulator) == ["patient1", "patient2", "patient3"]
    third = gcbulk("run", str(job), token=token)  # idempotent: nothing new, nothing sent
    assert "new 0 · re-queued 0 · unchanged 2 (done 2)" in third.stderr
    assert len(threaded_emulator.context.store.display_sets) == 3

"""``gcbulk run`` with cases that cannot go: a blocked case is skipped and listed, the others run; ``--strict`` holds
back all; ``run`` notices new and vanished case folders without ``--replan``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

from gcbulk.emulator.server import RunningEmulator
from gcbulk.state.ledger import Ledger
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.engine.test_run_command import gcbulk

GLOBS = (
    '[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n\n'
    '[[rules]]\nglob = "seg.mha"\nsocket = "airway-segmentation"\nrequired = true\n'
)


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
    assert "cases 2/4 done, 0 failed, 2 blocked" in run.stderr  # the whole job: blocked cases are not done
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


def test_redacted_titles_stay_out_of_output_events_report_and_status_and_the_ledger_keeps_them(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    job = write_job(tmp_path, threaded_emulator, rules=GLOBS)
    job.write_text(job.read_text().replace("[[rules]]", "[cases]\nredact_titles = true\n\n[[rules]]", 1))
    token = threaded_emulator.tokens["editor"]
    run = gcbulk("run", str(job), token=token)
    assert run.returncode == 0, run.stderr
    report = gcbulk("report", str(job), "--format", "json", token=token)
    status = gcbulk("status", str(job), token=token)
    events = (tmp_path / "job.events.jsonl").read_text()
    hashed = "title#" + hashlib.sha256(b"patient1").hexdigest()[:12]
    assert f'"case":"{hashed}"' in events.replace(" ", "")
    assert [row["title"] for row in json.loads(report.stdout)][0] == hashed
    for text in (run.stderr, run.stdout, events, report.stdout, status.stdout):
        assert "patient1" not in text and "patient2" not in text
    ledger = tmp_path / "job.ledger.sqlite"
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    with Ledger.open_readonly(ledger) as opened:
        assert [row["title"] for row in opened.rows("SELECT title FROM cases ORDER BY id")] == ["patient1", "patient2"]

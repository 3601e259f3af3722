"""Issue 24 as a run sees it. The bytes sent are the bytes planned: the plan records each file's multipart checksum,
the upload composes the same checksum from the MD5 of every part it reads, and a file whose bytes changed under a
restored size and mtime fails its case with "run gcbulk plan again" instead of reaching Grand Challenge unchecked.
A link onto a case folder that is done sends nothing again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.cli import main
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.jobfile import load_job
from gcbulk.state.ledger import Ledger, default_ledger_path
from tests.engine.conftest import make_tutorial_tree, run_job, study_display_sets, write_job


def _rewrite_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one voxel of the image
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


async def test_a_file_whose_bytes_change_under_a_restored_mtime_fails_its_case_and_a_new_plan_sends_it(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient, capsys: pytest.CaptureFixture
) -> None:
    cases = make_tutorial_tree(tmp_path / "cases", 2)
    job_file = write_job(tmp_path, emulator)
    assert main(["plan", str(job_file), "--offline"]) == 0
    _rewrite_keeping_size_and_mtime(cases / "patient2" / "ct.mha")

    outcome = await run_job(job_file, emulator)  # its own re-plan sees the same size and mtime: nothing to re-queue
    assert outcome.done == 1
    assert [title for title, _ in outcome.failed] == ["patient2"]
    reason = outcome.failed[0][1]
    assert "its bytes are not the bytes planned" in reason and "run 'gcbulk plan' again" in reason
    assert "patient2" not in await study_display_sets(client)
    statuses = sorted(u.status for u in emulator.context.store.uploads.values() if u.filename == "ct.mha")
    assert "Aborted" in statuses  # the changed bytes never became an object the server could take

    assert main(["plan", str(job_file), "--offline"]) == 0  # plan again: it reads the failed case's files anew
    assert "Re-queued (changed before Grand Challenge took them) (1):\n  patient2\n" in capsys.readouterr().out
    job = load_job(job_file)
    with Ledger.open_readonly(default_ledger_path(job.job_file), job.binding) as ledger:
        assert ledger.counts_by_state()["case"] == {"done": 1, "planned": 1}
    outcome = await run_job(job_file, emulator, replan=False)
    assert outcome.failed == [] and outcome.done == 1
    assert sorted(await study_display_sets(client)) == ["patient1", "patient2"]


async def test_an_alias_link_added_after_a_case_is_done_sends_nothing_and_makes_no_second_display_set(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    cases = make_tutorial_tree(tmp_path / "cases", 1)
    job_file = write_job(tmp_path, emulator)
    first = await run_job(job_file, emulator)
    assert first.failed == [] and first.done == 1
    uploads_before = len(emulator.context.store.uploads)

    (cases / "aa_backup_link").symlink_to(cases / "patient1")  # sorts first: it used to take the case over
    again = await run_job(job_file, emulator)
    assert again.failed == []
    assert len(emulator.context.store.uploads) == uploads_before  # nothing reached S3 again
    assert sorted(await study_display_sets(client)) == ["patient1"]

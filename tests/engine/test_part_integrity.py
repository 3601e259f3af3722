"""What S3 stored is checked without hashing a byte while sending: S3's ETag of a part is the MD5 of what it stored
(docs/gc-api.md §1), and the parts' ETags must compose into the checksum the plan recorded. A part S3 stored wrongly
(a faulty proxy or disk in front of it: the emulator's ``corrupt_body`` fault) is found before the upload is completed
and sent again; the file is read for it only then."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.cli import main
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.jobfile import load_job
from gcbulk.state.ledger import Ledger, default_ledger_path
from tests.engine.conftest import make_tutorial_tree, run_job, write_job
from tests.engine.test_faults import assert_all_imported, faults

BOUND = 120


@pytest.mark.parametrize("planned_with_checksums", [True, False], ids=["plan-checksums", "no-plan-checksums"])
async def test_a_part_s3_stored_wrongly_is_sent_again_before_the_upload_is_completed(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient, planned_with_checksums: bool
) -> None:
    # Without the plan's checksums (an older plan): the file is read at completion to compare its parts with S3's.
    make_tutorial_tree(tmp_path / "cases", 1)
    job_file = write_job(tmp_path, emulator)
    if planned_with_checksums:
        assert main(["plan", str(job_file), "--offline"]) == 0
    faults(emulator, FaultRule(match="PUT s3", corrupt_body=True, times=1))
    with anyio.fail_after(BOUND):
        outcome = await run_job(job_file, emulator, replan=not planned_with_checksums)
    assert outcome.failed == [] and outcome.done == 1
    # Both images imported: the object the server took is the file's bytes, not the flipped ones.
    await assert_all_imported(client, ["patient1"])
    # Two files of one part each, and the spoiled part once more.
    assert sum(emulator.context.counters.part_put_attempts.values()) == 3
    # Progress counts the files' bytes once: the spoiled part's bytes were given back before it was sent again.
    assert outcome.stats is not None
    assert outcome.stats.bytes_done == sum(p.stat().st_size for p in (tmp_path / "cases").rglob("*.mha"))
    job = load_job(job_file)
    with Ledger.open_readonly(default_ledger_path(job.job_file), job.binding) as ledger:
        reasons = [
            row["data"] for row in ledger.rows("SELECT data FROM events WHERE kind = ?", ("part.invalid.reason",))
        ]
    assert len(reasons) == 1 and "S3's ETag is not the MD5 of the file's bytes" in reasons[0]


async def test_parts_s3_keeps_storing_wrongly_fail_their_case_naming_them_and_nothing_is_completed(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job_file = write_job(tmp_path, emulator)
    assert main(["plan", str(job_file), "--offline"]) == 0
    faults(emulator, FaultRule(match="PUT s3", corrupt_body=True))  # every part, every time
    with anyio.fail_after(BOUND):
        outcome = await run_job(job_file, emulator, replan=False)
    assert outcome.done == 0 and [title for title, _ in outcome.failed] == ["patient1"]
    assert "S3 stored other bytes than the file's for parts [1], twice" in outcome.failed[0][1]
    # No spoiled object was completed for the server to import.
    assert all(upload.status != "Completed" for upload in emulator.context.store.uploads.values())

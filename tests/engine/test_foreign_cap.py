"""The account's upload cap held by another tool: the run waits for room under its live-upload ceiling, `gcbulk
status` names that wait while it lasts (not "Nothing needs attention"), and the wait is bounded: the cases fail
naming the limit when no room comes, after the job file's ``engine.limit_wait_timeout_seconds``."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.jobfile import JobFileError, load_job
from tests.engine.conftest import FAST_ENGINE, make_tutorial_tree, run_job, write_job
from tests.engine.test_run_command import REPO

CAP = 4
BOUND_SECONDS = 120


pytestmark = pytest.mark.emulator(import_delay_seconds=0.02, max_uploads_per_user=CAP)


async def test_a_cap_held_by_another_tool_is_named_by_status_and_the_wait_ends_with_the_limit_named(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    async with GrandChallengeClient(
        base_url=emulator.base_url, token=emulator.tokens["editor"], ca_file=emulator.ca_file
    ) as other_tool:
        for n in range(CAP):  # the same account's other tool holds every upload the server allows
            await other_tool.create_upload(f"other-{n}.bin")
    make_tutorial_tree(tmp_path / "cases", 2)
    # The user asks to fail fast rather than wait the default hour for room the other tool may never give back.
    job = write_job(tmp_path, emulator, engine="lease_seconds = 3\nlimit_wait_timeout_seconds = 6\n")
    wait = load_job(job).engine.limit_wait_timeout_seconds
    config = dataclasses.replace(FAST_ENGINE, live_upload_ceiling=CAP, limit_wait_timeout_seconds=wait, lease_seconds=3)
    seen: list[str] = []

    async def status_until_it_names_the_wait() -> None:
        while True:
            result = await anyio.run_process(
                [sys.executable, "-m", "gcbulk", "status", str(job), "--offline"], check=False, cwd=REPO
            )
            out = result.stdout.decode()
            if "Needs attention: no room for uploads" in out:
                seen.append(out)
                return
            await anyio.sleep(0.2)

    with anyio.fail_after(BOUND_SECONDS):
        async with anyio.create_task_group() as group:
            group.start_soon(status_until_it_names_the_wait)
            outcome = await run_job(job, emulator, config)
            with anyio.fail_after(30):
                while not seen:
                    await anyio.sleep(0.1)
    assert "case(s) waiting, next count at 20" in seen[0] and "Nothing needs attention" not in seen[0]
    assert sorted(title for title, _ in outcome.failed) == ["patient1", "patient2"]
    assert "no room" in outcome.failed[0][1] and "live uploads limit of 4" in outcome.failed[0][1], outcome.failed


@pytest.mark.parametrize("value", ["0", "-5", "true", '"soon"'])
def test_a_limit_wait_that_could_never_end_or_is_not_seconds_is_refused_naming_the_key(
    tmp_path: Path, emulator: RunningEmulator, value: str
) -> None:
    job = write_job(tmp_path, emulator, engine=f"limit_wait_timeout_seconds = {value}\n")
    with pytest.raises(JobFileError, match=r"engine\.limit_wait_timeout_seconds must be a number of seconds above 0"):
        load_job(job)

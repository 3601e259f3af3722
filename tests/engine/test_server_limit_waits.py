"""Waits that cannot end well end early and say so: the server's byte quota refusing every upload is named by
``gcbulk status`` and the progress line while the run waits, the waits are bounded (``engine.server_limit_retries``),
0 fails at once, and a stop does not wait out a retry that only sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.upload.s3_parts import put_part
from tests.engine.conftest import FAST_ENGINE, make_tutorial_tree, run_job, write_job
from tests.engine.test_run_command import REPO, gcbulk_env

QUOTA_WAIT_SECONDS = 2.0
BOUND_SECONDS = 120


QUOTA = 64 * 1024


pytestmark = pytest.mark.emulator(import_delay_seconds=0.02, verified_byte_quota=QUOTA, unverified_byte_quota=QUOTA)


async def fill_the_quota(emulator: RunningEmulator) -> None:
    """Another tool of the same user holds a completed upload past the byte quota (docs/gc-api.md §1: checked at
    presign time, against what the user's uploads hold): every presign of the run is refused, and nothing frees it."""
    async with GrandChallengeClient(
        base_url=emulator.base_url, token=emulator.tokens["editor"], ca_file=emulator.ca_file
    ) as other_tool:
        upload = await other_tool.create_upload("other-tool.bin")
        url = (await other_tool.generate_presigned_urls(upload, [1]))[1]
        data = b"x" * (2 * QUOTA)
        etag = await put_part(other_tool.session, url, data, progress=lambda n: None)
        # Completed and never consumed: its object stays under the user's key prefix, which the quota counts.
        await other_tool.complete_multipart_upload(upload, [{"ETag": etag, "PartNumber": 1}])


def quota_job(tmp_path: Path, emulator: RunningEmulator) -> Path:
    make_tutorial_tree(tmp_path / "cases", 2)
    return write_job(tmp_path, emulator, engine="lease_seconds = 3\n")


async def test_an_exhausted_quota_is_named_by_status_while_the_run_waits_and_the_case_fails_after_bounded_waits(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    job = quota_job(tmp_path, emulator)
    await fill_the_quota(emulator)
    policy = dataclasses.replace(FAST_ENGINE.retry, upload_quota_delay=QUOTA_WAIT_SECONDS, server_limit_retries=2)
    config = dataclasses.replace(FAST_ENGINE, retry=policy, lease_seconds=3)
    seen: list[str] = []

    async def status_until_it_names_the_quota() -> None:
        while True:
            result = await anyio.run_process(
                [sys.executable, "-m", "gcbulk", "status", str(job), "--offline"], check=False, cwd=REPO
            )
            out = result.stdout.decode()
            if "Needs attention: byte quota exhausted on the server" in out:
                seen.append(out)
                return
            await anyio.sleep(0.2)

    started = time.monotonic()
    with anyio.fail_after(BOUND_SECONDS):
        async with anyio.create_task_group() as group:
            group.start_soon(status_until_it_names_the_quota)
            outcome = await run_job(job, emulator, config)
            with anyio.fail_after(30):  # the run is over; status named the wait while it lasted, or fails here
                while not seen:
                    await anyio.sleep(0.1)
    seconds = time.monotonic() - started
    assert "upload(s) waiting, next try at 20" in seen[0] and "Nothing needs attention" not in seen[0]
    assert sorted(title for title, _ in outcome.failed) == ["patient1", "patient2"]
    reason = outcome.failed[0][1]
    assert "byte quota refused it 3 time(s)" in reason and "server_limit_retries" in reason, reason
    print(f"quota: status named it, then every case failed after {seconds:.1f} s")  # two 2 s waits, bounded


def test_server_limit_retries_0_fails_at_the_first_refusal_with_exit_1(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    job = quota_job(tmp_path, threaded_emulator)
    asyncio.run(fill_the_quota(threaded_emulator))
    env = gcbulk_env(threaded_emulator.tokens["editor"]) | {"GCBULK_SERVER_LIMIT_RETRIES": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "gcbulk", "run", str(job), "--metrics-address", "off"],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND_SECONDS,  # the default quota wait is 300 s: only failing fast ends within the bound
        cwd=REPO,
    )
    assert result.returncode == 1, result.stderr
    assert "2 case(s) failed" in result.stderr
    assert "byte quota refused it 1 time(s)" in result.stderr and "Upload limit reached" in result.stderr


def test_a_stop_does_not_wait_out_a_retry_that_only_sleeps(tmp_path: Path, threaded_emulator: RunningEmulator) -> None:
    job = quota_job(tmp_path, threaded_emulator)
    asyncio.run(fill_the_quota(threaded_emulator))
    process = subprocess.Popen(
        [sys.executable, "-m", "gcbulk", "run", str(job), "--metrics-address", "off", "--drain", "60"],
        env=gcbulk_env(threaded_emulator.tokens["editor"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    sleeping = threading.Event()
    lines: list[str] = []

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "waits 300 s before trying again" in line:  # the quota's backoff has begun
                sleeping.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    assert sleeping.wait(BOUND_SECONDS), "".join(lines)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=BOUND_SECONDS)  # not the 300 s of backoff, nor the 60 s drain
    assert process.returncode == 130, err
    assert "drain time of 60 s is over" not in err

"""``gcbulk run`` / ``gcbulk retry-failed`` as a user runs them: exit codes, the failure list, stop signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.upload.crashpoints import ENV_VAR
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.imaging import make_mask, make_mha, make_unimportable_mha

REPO = Path(__file__).parents[2]


def gcbulk_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["GRAND_CHALLENGE_AUTHORIZATION"] = token
    return env


def gcbulk(*args: str, token: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gcbulk", *args],
        env=gcbulk_env(token),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_a_run_that_completes_exits_0_and_a_second_run_does_nothing(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    job = write_job(tmp_path, threaded_emulator)
    token = threaded_emulator.tokens["editor"]
    first = gcbulk("run", str(job), token=token)
    assert first.returncode == 0, first.stderr
    assert "cases 2/2 done, 0 failed" in first.stderr
    requests_before = sum(threaded_emulator.context.counters.requests.values())
    again = gcbulk("run", str(job), token=token)
    assert again.returncode == 0, again.stderr
    assert len(threaded_emulator.context.store.display_sets) == 2
    # Nothing left to do: no upload, no display set; only the run's start-up reads.
    # (sockets, the study, the listing of its titles for ownership, the live-upload count)
    assert sum(threaded_emulator.context.counters.requests.values()) - requests_before <= 6
    events = [json.loads(line) for line in (tmp_path / "job.events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("case_done") == 2
    for written in tmp_path.glob("job.*"):  # the ledger (and its WAL), the events, the job file
        assert token.encode() not in written.read_bytes(), written
    assert token not in first.stderr + first.stdout + again.stderr + again.stdout


def test_failed_cases_are_listed_with_reasons_exit_1_and_retry_failed_finishes_them(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    bad = tmp_path / "cases" / "patient2" / "seg.mha"
    make_unimportable_mha(bad)  # its header and data agree, so it passes the plan; the import fails
    # A plain image socket: a segmentation socket's voxels are checked while planning, which would block the case.
    job = write_job(
        tmp_path,
        threaded_emulator,
        rules=(
            '[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n\n[[rules]]\nglob = "seg.mha"\nsocket = "generic-medical-image"\n'
        ),
    )
    token = threaded_emulator.tokens["editor"]
    failed = gcbulk("run", str(job), token=token)
    assert failed.returncode == 1
    assert "1 case(s) failed" in failed.stderr and "patient2: generic-medical-image:" in failed.stderr
    assert "could not be imported" in failed.stderr

    make_mask(bad, (4, 8, 8), seed=7)
    retried = gcbulk("retry-failed", str(job), "--replan", token=token)
    assert retried.returncode == 0, retried.stderr
    store = threaded_emulator.context.store
    assert sorted(ds.title for ds in store.display_sets.values()) == ["patient1", "patient2"]
    patient2 = next(ds for ds in store.display_sets.values() if ds.title == "patient2")
    assert set(patient2.values) == {"ct-image", "generic-medical-image"}


def test_a_refused_token_is_a_configuration_error(tmp_path: Path, threaded_emulator: RunningEmulator) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    result = gcbulk("run", str(write_job(tmp_path, threaded_emulator)), token="wrong-token-xyz")
    assert result.returncode == 2
    assert "wrong-token-xyz" not in result.stderr + result.stdout
    assert "token" in result.stderr


def test_an_unknown_reader_study_is_a_configuration_error(tmp_path: Path, threaded_emulator: RunningEmulator) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = write_job(tmp_path, threaded_emulator)
    job.write_text(job.read_text().replace('"example-study"', '"no-such-study"'))
    result = gcbulk("run", str(job), token=threaded_emulator.tokens["editor"])
    assert result.returncode == 2
    assert "'no-such-study' was not found" in result.stderr


def wait_for_event(events_file: Path, event: str, deadline_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if events_file.exists() and f'"event":"{event}"' in events_file.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {event} event within {deadline_seconds} s")


def start_slow_run(tmp_path: Path, emulator: RunningEmulator) -> subprocess.Popen:
    cases = make_tutorial_tree(tmp_path / "cases", 3)
    for n in (1, 2, 3):
        make_mha(cases / f"patient{n}" / "ct.mha", (44, 256, 512), seed=n)  # three 5 MiB parts each
    # Slow parts (2.5 s each), so the drain after a first signal is still going when a second one comes.
    emulator.context.faults.replace([FaultRule(match="PUT s3", bandwidth_bytes_per_second=2 * 1024**2)])
    job = write_job(tmp_path, emulator, engine='part_size = "5 MiB"\nparts_in_flight = 2\n')
    return subprocess.Popen(
        [sys.executable, "-m", "gcbulk", "run", str(job), "--drain", "60", "--progress-interval", "0.2"],
        env=gcbulk_env(emulator.tokens["editor"]),
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def wait_for_a_hanging_part(emulator: RunningEmulator, deadline_seconds: float = 30.0) -> None:
    """Until a part PUT has reached the S3 site but is not stored yet."""
    counters = emulator.context.counters
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        requested = sum(n for key, n in list(counters.requests.items()) if key.startswith("PUT s3:"))
        if requested > sum(counters.part_puts.values()):
            return
        time.sleep(0.02)
    raise AssertionError("no part PUT in flight")


def assert_resumes_to_the_end(tmp_path: Path, emulator: RunningEmulator) -> None:
    emulator.context.faults.replace([])
    resumed = gcbulk("run", str(tmp_path / "job.toml"), token=emulator.tokens["editor"])
    assert resumed.returncode == 0, resumed.stderr
    store = emulator.context.store
    assert sorted(ds.title for ds in store.display_sets.values()) == ["patient1", "patient2", "patient3"]
    assert set(emulator.context.counters.part_puts.values()) == {1}


def test_the_first_signal_drains_in_flight_parts_and_exits_130_with_work_left(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    process = start_slow_run(tmp_path, threaded_emulator)
    wait_for_event(tmp_path / "job.events.jsonl", "part_sent")
    threaded_emulator.context.faults.replace([FaultRule(match="PUT s3", latency_seconds=1)])
    wait_for_a_hanging_part(threaded_emulator)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 130, stderr  # not 0: `gcbulk run job.toml && next-step` must not carry on
    events = [json.loads(line)["event"] for line in (tmp_path / "job.events.jsonl").read_text().splitlines()]
    after_stop = events[events.index("stop_requested") :]
    assert "part_sent" in after_stop, "the part on the wire at the signal finished and was recorded"
    assert "upload_creating" not in after_stop and "display_set_creating" not in after_stop  # nothing new
    assert "starting nothing new" in stderr and "run it again to resume" in stderr
    periodic = [line for line in stderr.splitlines() if "MiB/s · ETA" in line and "gcbulk run:" not in line]
    assert periodic, "the periodic progress line"
    assert_resumes_to_the_end(tmp_path, threaded_emulator)


def test_a_second_signal_stops_at_once_and_the_run_still_resumes(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    process = start_slow_run(tmp_path, threaded_emulator)
    wait_for_event(tmp_path / "job.events.jsonl", "part_sent")
    # From now on parts hang for a while, so the drain after the first signal is surely still going at the second.
    threaded_emulator.context.faults.replace([FaultRule(match="PUT s3", latency_seconds=8)])
    wait_for_a_hanging_part(threaded_emulator)
    process.send_signal(signal.SIGTERM)
    wait_for_event(tmp_path / "job.events.jsonl", "stop_requested")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 143, stderr
    assert "stopped at once by SIGTERM with" in stderr
    assert_resumes_to_the_end(tmp_path, threaded_emulator)


def test_an_unreachable_server_is_reported_before_anything_is_sent(tmp_path: Path) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    (tmp_path / "job.toml").write_text(
        'reader_study = "example-study"\nbase_url = "https://127.0.0.1:9/api/v1/"\ncase_root = "cases"\n\n'
        '[[rules]]\nposition = 1\nsocket = "ct-image"\n'
    )
    result = gcbulk("run", str(tmp_path / "job.toml"), token="any-token")
    assert result.returncode == 2
    assert "could not check the job's sockets at https://127.0.0.1:9/api/v1/" in result.stderr

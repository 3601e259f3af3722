"""Progress numbers that add up: one table of what the line says for where a job stands (``{in; want}`` rows, as
rclone's accounting tests), and a real re-run after the server lost a case."""

from __future__ import annotations

import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.upload.progress import StatsSnapshot, format_progress_line
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.engine.test_run_command import gcbulk

MIB = 1024**2


def snapshot(**fields: float) -> StatsSnapshot:
    base = dict(
        elapsed_seconds=10.0,
        bytes_total=100 * MIB,
        bytes_done=40 * MIB,
        bytes_resumed=0,
        files_total=4,
        files_done=1,
        files_failed=0,
        cases_total=2,
        cases_done=0,
        cases_failed=0,
        retries=0,
        bytes_per_second=10 * MIB,
        average_bytes_per_second=4 * MIB,
    )
    return StatsSnapshot(**(base | fields))  # type: ignore[arg-type]


ROWS = [
    pytest.param(
        snapshot(),
        None,
        True,
        ["cases 0/2 done, 0 failed", "40.0 MiB/100.0 MiB", "10.0 MiB/s", "ETA 0m06s"],
        id="moving: an ETA at the recent rate",
    ),
    pytest.param(
        snapshot(bytes_per_second=0.0),
        None,
        True,
        ["0.0 MiB/s", "stopped (nothing moving)"],
        id="stalled: no ETA from the average of better times",
    ),
    pytest.param(snapshot(), None, False, ["0.0 MiB/s", "· stopped ·"], id="stopped by a signal: no ETA of zero"),
    pytest.param(
        snapshot(bytes_done=100 * MIB, files_done=4),
        None,
        True,
        ["100.0 MiB/100.0 MiB", "every byte sent; waiting for the server's imports"],
        id="sent, importing: not 'ETA 0m00s' with cases left",
    ),
    pytest.param(
        snapshot(cases_total=0, cases_done=2, files_total=0, files_done=4, bytes_total=0),
        None,
        True,
        ["cases 2/2 done", "files 4/4", "ETA done"],
        id="re-queued during the pass: never 2/0",
    ),
    pytest.param(
        snapshot(cases_total=0, files_total=0, files_done=0, bytes_total=0, bytes_done=0),
        {"done": 7, "failed": 1, "blocked": 1, "vanished": 3},
        True,
        ["cases 7/9 done, 1 failed, 1 blocked", "files 0/0"],
        id="a re-run: the ledger's whole job",
    ),
    pytest.param(
        snapshot(),
        {"done": 3, "planned": 22},
        False,
        ["cases 3/25 done", "· stopped ·"],
        id="stopped with 22 cases left",
    ),
]


@pytest.mark.parametrize(("snap", "cases", "moving", "want"), ROWS)
def test_the_progress_line_says_where_the_job_stands(
    snap: StatsSnapshot, cases: dict[str, int] | None, moving: bool, want: list[str]
) -> None:
    line = format_progress_line(snap, cases, moving=moving)
    for fragment in want:
        assert fragment in line, line
    assert "MB/s" not in line.replace("MiB/s", "")  # one unit system


def test_a_rerun_after_the_server_lost_a_case_counts_every_case_once(
    tmp_path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    job = write_job(tmp_path, threaded_emulator)
    token = threaded_emulator.tokens["editor"]
    assert gcbulk("run", str(job), token=token).returncode == 0
    nothing_left = gcbulk("run", str(job), token=token)
    assert "gcbulk run: cases 3/3 done, 0 failed · files 0/0" in nothing_left.stderr  # not "cases 0/0"
    store = threaded_emulator.context.store
    del store.display_sets[next(pk for pk, ds in store.display_sets.items() if ds.title == "patient2")]
    requeued = gcbulk("run", str(job), token=token)
    assert requeued.returncode == 0, requeued.stderr
    assert "patient2" in requeued.stderr  # named as sent again
    assert "gcbulk run: cases 3/3 done, 0 failed · files 2/2" in requeued.stderr, requeued.stderr


def test_an_idle_follow_worker_counts_itself_live_in_its_metrics(tmp_path, threaded_emulator: RunningEmulator) -> None:
    import re
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.engine.test_run_command import REPO, gcbulk_env

    make_tutorial_tree(tmp_path / "cases", 1)
    job = write_job(tmp_path, threaded_emulator, engine="lease_seconds = 3\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    follow = subprocess.Popen(
        [sys.executable, "-m", "gcbulk", "run", str(job), "--follow", "--metrics-address", f"127.0.0.1:{port}"]
        + ["--poll-interval", "60"],
        env=gcbulk_env(threaded_emulator.tokens["editor"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )

    def scrape() -> str | None:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            return None

    try:
        deadline = time.monotonic() + 90
        idle_since = None
        seen_live: list[float] = []
        # Watched over twice its lease after its pass: idle, waiting 60 s for the next poll, with no heartbeat.
        while idle_since is None or time.monotonic() - idle_since < 6:
            assert time.monotonic() < deadline and follow.poll() is None
            text = scrape()
            done = text and re.search(r'^gcbulk_cases\{state="done"\} (\S+)', text, re.M)
            if done and float(done.group(1)) == 1:
                idle_since = idle_since or time.monotonic()
                live = re.search(r'^gcbulk_workers\{status="live"\} (\S+)', text, re.M)
                seen_live.append(float(live.group(1)) if live else 0.0)
            time.sleep(0.2)  # the scrape interval of this watch, not a wait for an outcome
        assert seen_live and set(seen_live) == {1.0}, seen_live
    finally:
        follow.send_signal(15)
        follow.communicate(timeout=60)
    assert follow.returncode == 0  # follow mode keeps 0 on SIGTERM, as orchestrators expect

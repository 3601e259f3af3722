"""The DICOM process pool: its workers leave with the run that made them, whichever way they were started (under
forkserver, Python 3.14's default, their parent is the fork server, not the run), and starting them never forks the
run itself, whose threads a fork would copy in the middle of whatever they hold (Python 3.12+ warns of it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from gcbulk.engine.dicom.pool import dicom_pool

REPO = Path(__file__).parents[2]
BOUND = 30  # seconds: a worker still there after this is an orphan

# A run whose two workers are each busy with a task longer than the test.
BUSY_RUN = """
import sys, time, os
from gcbulk.engine.dicom.pool import dicom_pool
pool = dicom_pool(2, start_method=sys.argv[1])
for started in [pool.submit(os.getpid) for _ in range(2)]:
    started.result()
pool.submit(time.sleep, 600), pool.submit(time.sleep, 600)
print("busy", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("start_method", ["forkserver", "spawn", "fork"])
def test_the_pools_workers_leave_when_the_run_is_killed_with_9(start_method: str) -> None:
    run = subprocess.Popen([sys.executable, "-c", BUSY_RUN, start_method], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None and run.stdout.readline() == "busy\n"
        started = psutil.Process(run.pid).children(recursive=True)  # the workers, a fork server, a resource tracker
        assert len(started) >= 2
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=BOUND)
        _, left_behind = psutil.wait_procs(started, timeout=BOUND)
        # Re-parented to a PID 1 that does not reap, a dead worker stays a zombie: gone all the same.
        assert [p for p in left_behind if _running(p)] == []
    finally:
        run.kill()
        run.wait(timeout=BOUND)


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_pool_works_without_forking_the_run_whose_threads_a_fork_would_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_fork() -> int:
        raise AssertionError("the run forked itself to start a DICOM worker")

    monkeypatch.setattr(os, "fork", no_fork)
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait, daemon=True)  # as the run's event loop and worker threads are
    busy.start()
    try:
        with dicom_pool(2) as pool:
            worker_pids = set(pool.map(_pid_after, [0.05] * 4))
    finally:
        stop.set()
    assert worker_pids and os.getpid() not in worker_pids


def _pid_after(seconds: float) -> int:
    threading.Event().wait(seconds)
    return os.getpid()

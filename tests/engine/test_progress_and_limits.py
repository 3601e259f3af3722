"""Pure parts of the engine: statistics snapshots, the server-limit gates, the sweep guard, the crash hook."""

from __future__ import annotations

import json
import subprocess
import sys

import anyio
import anyio.lowlevel
import pytest

from gcbulk.engine.gc.pacer import api_policy, import_policy
from gcbulk.engine.upload.crashpoints import POINTS, _parse
from gcbulk.engine.upload.progress import EventLog, TransferStats, format_progress_line
from gcbulk.engine.upload.server_limits import CountingGate, ImportPacer, SweepGuard, SweepRisk

GIB = 1024**3


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_snapshot_reports_speed_and_eta_from_the_bytes_counted() -> None:
    clock = FakeClock()
    stats = TransferStats(clock=clock)
    stats.bytes_total, stats.cases_total, stats.files_total = 100 * 1024**2, 4, 8
    clock.now += 2
    stats.add_bytes(20 * 1024**2)
    snapshot = stats.snapshot()
    assert snapshot.mib_per_second == pytest.approx(10.0)
    assert snapshot.eta_seconds == pytest.approx(8.0)
    line = format_progress_line(snapshot)
    assert "cases 0/4 done, 0 failed" in line and "20.0 MiB/100.0 MiB" in line and "10.0 MiB/s" in line
    assert "ETA 0m08s" in line


def test_a_failed_attempt_gives_its_bytes_back() -> None:
    stats = TransferStats(clock=FakeClock())
    stats.add_bytes(5000)
    stats.add_bytes(-3000)
    assert stats.snapshot().bytes_done == 2000


def test_without_progress_there_is_no_eta_and_the_line_says_nothing_moves() -> None:
    stats = TransferStats(clock=FakeClock())
    stats.bytes_total, stats.cases_total = 10, 1
    assert stats.snapshot().eta_seconds is None
    assert "stopped (nothing moving)" in format_progress_line(stats.snapshot())


def test_the_event_log_writes_one_json_object_per_line(tmp_path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.emit("case_done", case="patient1", key=[1])
    log.emit("progress", bytes_done=10)
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["case_done", "progress"]
    assert lines[0]["case"] == "patient1" and lines[0]["at"].endswith("Z")


async def test_a_gate_takes_several_units_at_once_or_waits() -> None:
    gate = CountingGate(3, held=1)
    assert await gate.acquire(2) == 2 and gate.held == 3
    order: list[str] = []

    async def wants_two() -> None:
        await gate.acquire(2)
        order.append("got two")

    async with anyio.create_task_group() as group:
        group.start_soon(wants_two)
        await anyio.lowlevel.checkpoint()
        order.append("releasing")
        await gate.release(1)
        await anyio.lowlevel.checkpoint()
        assert order == ["releasing"]  # one free unit is not enough for a request of two
        await gate.release(1)
    assert order == ["releasing", "got two"] and gate.held == 3


async def test_a_request_larger_than_the_ceiling_waits_until_it_is_alone_then_takes_all_it_needs() -> None:
    gate = CountingGate(2, held=1)
    taken: list[int] = []

    async def wants_five() -> None:
        taken.append(await gate.acquire(5))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(wants_five)
            while gate.waiting == 0:
                await anyio.lowlevel.checkpoint()
            assert taken == []  # another holder: not alone yet
            await gate.release(1)
    assert taken == [5] and gate.held == 5  # over the ceiling until released: a case is never its own obstacle


def test_a_gate_needs_a_positive_ceiling() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CountingGate(0, name="imports")


def test_a_file_that_cannot_finish_before_the_sweep_is_refused() -> None:
    guard = SweepGuard()
    with pytest.raises(SweepRisk, match="needs about 142.2 h, but Grand Challenge deletes an upload 24.0 h after"):
        guard.check("big.mha", 500 * GIB, measured_bytes=GIB, bytes_per_second=1024**2)
    guard.check("small.mha", GIB, measured_bytes=GIB, bytes_per_second=1024**2)
    guard.check("big.mha", 500 * GIB, measured_bytes=1024, bytes_per_second=1.0)  # too little measured to judge


def test_crash_points_are_parsed_and_checked() -> None:
    assert _parse("mid-part:3") == ("mid-part", 3)
    assert _parse("after-case-done") == ("after-case-done", 1)
    assert _parse(None) is None
    with pytest.raises(ValueError, match="unknown crash point"):
        _parse("nowhere")
    assert len(POINTS) >= 18


def test_the_crash_hook_kills_the_process_at_its_point() -> None:
    code = "from gcbulk.engine.upload.crashpoints import crash_point\ncrash_point('mid-part')\ncrash_point('mid-part')\nprint('x')"
    result = subprocess.run(
        [sys.executable, "-c", code], env={"GCBULK_CRASH_AT": "mid-part:2", "PATH": ""}, capture_output=True, text=True
    )
    assert result.returncode == -9 and result.stdout == ""


def test_bytes_sent_by_an_earlier_run_count_as_done_but_not_as_speed() -> None:
    clock = FakeClock()
    stats = TransferStats(clock=clock)
    stats.bytes_total = 100 * 1024**2
    stats.add_resumed(50 * 1024**2)
    clock.now += 5
    stats.add_bytes(10 * 1024**2)
    snapshot = stats.snapshot()
    assert snapshot.bytes_done == 60 * 1024**2 and snapshot.bytes_resumed == 50 * 1024**2
    assert snapshot.mib_per_second == pytest.approx(2.0)
    assert snapshot.eta_seconds == pytest.approx(20.0)


async def test_a_higher_ceiling_lets_a_waiting_case_in_at_once() -> None:
    gate = CountingGate(2, held=2)
    taken: list[int] = []

    async def wants_two() -> None:
        taken.append(await gate.acquire(2))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(wants_two)
            while gate.waiting == 0:
                await anyio.lowlevel.checkpoint()
            gate.set_ceiling(4)  # the import pacer grew the limit: nothing had to be released
    assert taken == [2] and gate.held == 4


def test_the_import_pacer_moves_the_gates_ceiling_with_the_servers_import_times() -> None:
    gate = CountingGate(16)
    pacer = ImportPacer(gate, import_policy(16))
    assert gate.ceiling == pacer.limit == 12 and pacer.expected_seconds() is None
    gate.held = 12
    for _ in range(40):  # imports as fast as the fastest: the limit is used in full, so it grows
        pacer.imported(0.7)
    grown = gate.ceiling
    assert grown > 12 and pacer.expected_seconds() == pytest.approx(0.7)
    pacer.imported(0.7 * 4)  # four times the floor: imports only queue behind the server's workers
    assert gate.ceiling < grown
    backed_off = gate.ceiling
    pacer.timed_out()  # within the cool-down of the last back-off: once is enough
    assert gate.ceiling == backed_off
    for _ in range(500):
        pacer.imported(5.0)
        pacer.timed_out()
    assert gate.ceiling == 8  # never below 8 imports: a queue ahead of each of the server's import workers


def test_fixed_limits_stay_at_the_knobs() -> None:
    assert import_policy(6, adaptive=False).start().current == 6
    assert api_policy(3, adaptive=False).start().current == 3
    assert api_policy(16).start().current == 2 and api_policy(1).start().current == 1


def test_the_progress_line_ends_with_the_adaptive_limits_once_a_run_has_them() -> None:
    stats = TransferStats()
    assert "in flight" not in format_progress_line(stats.snapshot())
    stats.limits = lambda: (3, 8)
    snapshot = stats.snapshot()
    assert (snapshot.api_calls_limit, snapshot.imports_limit) == (3, 8)
    assert format_progress_line(snapshot).endswith(" · in flight ≤ 3 API calls, ≤ 8 imports")

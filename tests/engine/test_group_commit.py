"""Group commit as the engine sees it (``LedgerRunner.record``): steps that wait while the ledger's thread is busy are
recorded in one transaction, and each caller still sees only its own outcome — its result, its event line, its
refusal — as if it had been recorded alone."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import EventLog
from gcbulk.state.ledger import IllegalTransition, Ledger
from gcbulk.state.steps import step
from tests.state.conftest import BINDING, planned_case, record


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.ledger.sqlite"
    with Ledger.open(path, BINDING) as ledger:
        record(ledger, [planned_case(f"p{n}") for n in (1, 2, 3)])
    return path


@pytest.fixture
def event_log(tmp_path: Path) -> Iterator[EventLog]:
    """The run's event file (``events.jsonl``), closed after the test."""
    events = EventLog(tmp_path / "events.jsonl")
    yield events
    events.close()


class BusyLedger:
    """Holds the ledger's thread busy until released, and counts the transactions begun on it meanwhile."""

    def __init__(self, runner: LedgerRunner) -> None:
        self.runner = runner
        self.release = threading.Event()
        self.begun: list[str] = []

    def _hold(self) -> None:
        connection = self.runner.ledger.db.conn
        assert isinstance(connection, sqlite3.Connection)
        connection.set_trace_callback(lambda sql: self.begun.append(sql) if sql.startswith("BEGIN") else None)
        self.release.wait(timeout=30)

    async def hold(self) -> None:
        await self.runner.run(self._hold)


def event_kinds(events: EventLog) -> list[tuple[str, str | None]]:
    assert events.path is not None
    return [(line["event"], line.get("case")) for line in map(json.loads, events.path.read_text().splitlines())]


async def test_steps_that_wait_for_a_busy_ledger_go_in_one_transaction(ledger_file: Path, event_log: EventLog) -> None:
    async with LedgerRunner(ledger_file, BINDING) as runner:
        journal, busy = Journal(runner, event_log), BusyLedger(runner)
        results: dict[int, bool] = {}

        async def start(case_id: int) -> None:
            results[case_id] = await journal.record(step(journal.ledger.case_started, case_id), case=f"p{case_id}")

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(busy.hold)
                await anyio.sleep(0.05)  # the thread is taken: the steps below queue behind it
                for case_id in (1, 2, 3):
                    group.start_soon(start, case_id)
                await anyio.sleep(0.05)
                busy.release.set()
        assert results == {1: True, 2: True, 3: True}
        assert busy.begun == ["BEGIN"]  # three callers, one transaction
        states = [await journal.read(journal.ledger.case_work, case_id) for case_id in (1, 2, 3)]
        assert [work.state for work in states] == ["running"] * 3
    assert sorted(event_kinds(event_log)) == [("case_started", "p1"), ("case_started", "p2"), ("case_started", "p3")]


async def test_a_refused_step_is_its_callers_error_alone(ledger_file: Path, event_log: EventLog) -> None:
    async with LedgerRunner(ledger_file, BINDING) as runner:
        journal, busy = Journal(runner, event_log), BusyLedger(runner)
        outcomes: dict[str, object] = {}

        async def attempt(name: str, case_id: int, done: bool) -> None:
            method = journal.ledger.case_done if done else journal.ledger.case_started
            try:
                outcomes[name] = await journal.record(step(method, case_id), case=f"p{case_id}")
            except IllegalTransition as refused:
                outcomes[name] = refused

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(busy.hold)
                await anyio.sleep(0.05)
                group.start_soon(attempt, "start p1", 1, False)
                group.start_soon(attempt, "p2 done before it started", 2, True)  # planned -> done: refused
                group.start_soon(attempt, "start p3", 3, False)
                await anyio.sleep(0.05)
                busy.release.set()
        assert outcomes["start p1"] is True and outcomes["start p3"] is True
        assert isinstance(outcomes["p2 done before it started"], IllegalTransition)
        states = [(await journal.read(journal.ledger.case_work, case_id)).state for case_id in (1, 2, 3)]
        assert states == ["running", "planned", "running"]
    assert sorted(event_kinds(event_log)) == [("case_started", "p1"), ("case_started", "p3")]  # none for the refusal


async def test_a_caller_cancelled_while_it_waits_records_nothing(ledger_file: Path, event_log: EventLog) -> None:
    async with LedgerRunner(ledger_file, BINDING) as runner:
        journal, busy = Journal(runner, event_log), BusyLedger(runner)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(busy.hold)
                await anyio.sleep(0.05)
                with anyio.move_on_after(0.05):  # gives up before the ledger's thread is free
                    await journal.record(step(journal.ledger.case_started, 1), case="p1")
                busy.release.set()
        assert await journal.record(step(journal.ledger.case_started, 2), case="p2") is True
        states = [(await journal.read(journal.ledger.case_work, case_id)).state for case_id in (1, 2)]
        assert states == ["planned", "running"]

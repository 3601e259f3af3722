"""Fixtures of the ledger tests: a fresh ledger per test, and planned cases built by hand."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from gcbulk.engine.plan.planner import PlannedCase, PlannedFile, PlannedItem
from gcbulk.state.ledger import JobBinding, Ledger
from gcbulk.state.records import PlanDiff
from gcbulk.state.replan import planning

BINDING = JobBinding(reader_study="example-study", base_url="https://gc.example/api/v1/", case_root="/data/cases")
MiB = 1024**2


def planned_case(
    title: str,
    files: dict[str, list[tuple[str, int]]] | None = None,
    *,
    values: dict[str, str] | None = None,
    mtime_ns: int = 1,
    findings: tuple = (),
) -> PlannedCase:
    """A case folder ``title`` whose sockets get the given (name, size) files, and JSON values."""
    files = {"ct-image": [("ct.mha", 100)]} if files is None else files
    items = [
        PlannedItem(
            socket_slug=socket,
            files=tuple(PlannedFile(path=f"{title}/{name}", name=name, size=size, mtime_ns=mtime_ns)
                        for name, size in entries),
        )
        for socket, entries in files.items()
    ]
    items += [PlannedItem(socket_slug=socket, value_json=value) for socket, value in (values or {}).items()]
    return PlannedCase(title=title, folder=title, items=tuple(items), findings=findings)


def record(ledger: Ledger, cases: Iterable[PlannedCase], **options) -> PlanDiff:
    with planning(ledger, **options) as plan:
        for case in cases:
            plan.add(case)
        return plan.finish()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "job.ledger.sqlite"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator[Ledger]:
    with Ledger.open(ledger_path, BINDING) as opened:
        yield opened


@pytest.fixture
def one_case(ledger: Ledger) -> Ledger:
    """A ledger holding one planned case 'p1' with one CT file of 12 MiB (3 parts of 5 MiB)."""
    record(ledger, [planned_case("p1", {"ct-image": [("ct.mha", 12 * MiB)]})])
    return ledger

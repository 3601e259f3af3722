"""Fixtures of the ledger tests: a fresh ledger per test, and planned cases built by hand."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from gcbulk.engine.plan.planner import PlannedCase, PlannedFile, PlannedItem
from gcbulk.state.ledger import JobBinding, Ledger
from gcbulk.state.records import PlanDiff
from gcbulk.state.replan import planning
from tests.pg_server import PgServer

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
            files=tuple(
                PlannedFile(path=f"{title}/{name}", name=name, size=size, mtime_ns=mtime_ns) for name, size in entries
            ),
        )
        for socket, entries in files.items()
    ]
    items += [PlannedItem(socket_slug=socket, value_json=value) for socket, value in (values or {}).items()]
    return PlannedCase(title=title, folder=title, items=tuple(items), findings=findings)


def sync_of_each_commit(statements: Iterable[str]) -> list[str]:
    """The ``synchronous`` mode (NORMAL, FULL) each COMMIT in an SQLite trace ran under: FULL is an fsynced commit."""
    mode, modes = "NORMAL", []
    for sql in statements:
        if sql.upper().startswith("PRAGMA SYNCHRONOUS="):
            mode = sql.split("=", 1)[1].strip().upper()
        elif sql.upper().startswith("COMMIT"):
            modes.append(mode)
    return modes


def record(ledger: Ledger, cases: Iterable[PlannedCase], **options) -> PlanDiff:
    with planning(ledger, **options) as plan:
        for case in cases:
            plan.add(case)
        return plan.finish()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where the ledger lives: a fresh SQLite file, or a fresh database on the test PostgreSQL server. Every test
    that takes this fixture (or ``ledger``, ``one_case``) runs on both stores, except those marked ``sqlite_only``
    (about the SQLite file itself: its permissions, its lock, its pragmas)."""
    if request.param == "sqlite":
        return tmp_path / "job.ledger.sqlite"
    # A copy of a database migrated once: these tests are about the ledger, not its migrations (test_migrations and
    # the several-workers tests migrate empty databases).
    server: PgServer = request.getfixturevalue("pg_server")
    dsn = server.new_database(template=server.ledger_template())
    request.addfinalizer(lambda: server.drop_database(dsn))
    return dsn


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_postgres = params.get("ledger_path") == "postgresql"
        (dropped if on_postgres and item.get_closest_marker("sqlite_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def ledger(ledger_path: Path | str) -> Iterator[Ledger]:
    with Ledger.open(ledger_path, BINDING) as opened:
        yield opened


@pytest.fixture
def one_case(ledger: Ledger) -> Ledger:
    """A ledger holding one planned case 'p1' with one CT file of 12 MiB (3 parts of 5 MiB)."""
    record(ledger, [planned_case("p1", {"ct-image": [("ct.mha", 12 * MiB)]})])
    return ledger

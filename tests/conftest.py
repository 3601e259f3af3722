"""Shared fixtures: a running emulator on loopback, in-process or in a thread for synchronous clients."""

from __future__ import annotations

import os
import sys

# Bytecode caches, whatever the environment says. The suite starts hundreds of gcbulk and emulator processes, and each
# of its workers imports every test module (pytest rewrites their asserts). With PYTHONDONTWRITEBYTECODE set (this
# workplace's shell sets it) nothing is cached: every process compiles gcbulk's modules again (0.72 s of CPU for
# `gcbulk run --help` against 0.46 s) and every worker rewrites and compiles the test modules (8.5 s against 3.0 s), a
# third of the suite's CPU on two cores. Set here, before anything of gcbulk is imported, so the workers and every
# process a test starts inherit it; the caches land in the ignored __pycache__ folders beside the sources.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    sys.dont_write_bytecode = False

from collections.abc import AsyncIterator, Iterator  # noqa: E402 (after the bytecode setting above)
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from gcbulk.emulator.context import SCHEMA_CURRENT, EmulatorConfig  # noqa: E402
from gcbulk.emulator.server import RunningEmulator, emulator_in_thread, run_emulator  # noqa: E402
from tests.pg_server import PgServer  # noqa: E402

# ---- the suite on several workers (pytest-xdist, `-n` in pyproject's addopts) ---------------------------------------

# The modules whose tests take longest (tens of seconds each: several processes, kills and resumes, a wheel built and
# installed), started first: a long test handed out last would keep one worker busy after the others have finished.
# Everything else keeps its order.
LONGEST_FIRST = (
    "tests/engine/test_several_workers.py",
    "tests/engine/test_several_workers_under_faults.py",
    "tests/container/test_container_entrypoint.py",
    "tests/packaging/test_wheel.py",
    "tests/security/test_token_never_leaks.py",
    "tests/engine/test_crash_resume.py",
    "tests/engine/test_dicom_crash_resume.py",
)
# Modules whose tests one worker runs one after another. The several-workers tests each run three or four gcbulk
# processes (side by side they multiply them on two cores, past their hang bounds); a wheel is built in the
# source tree (build/, *.egg-info), which two builds would share.
ONE_WORKER = {
    "tests/engine/test_several_workers.py": "several gcbulk workers",
    "tests/engine/test_several_workers_under_faults.py": "several gcbulk workers",
    "tests/packaging/test_wheel.py": "wheel",
    "tests/packaging/test_extras.py": "wheel",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: n for n, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest keep order


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """xdist's ``load`` distribution, except that each ``ONE_WORKER`` group goes to one worker. Written here because
    xdist's own ``--dist loadgroup`` (an ``xdist_group`` marker) does not group under pytest 9: it renames
    ``item._nodeid``, which pytest 9 no longer reads (pytest-xdist 3.8.0)."""
    if config.getvalue("dist") != "load":
        return None  # a distribution asked for on the command line
    from xdist.scheduler import LoadScopeScheduling

    class LoadWithOneWorkerGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return ONE_WORKER.get(nodeid.split("::", 1)[0], nodeid)  # a test of its own is its own scope

    return LoadWithOneWorkerGroups(config, log)  # type: ignore[arg-type]


@pytest.fixture
def emulator_schema() -> str:
    """The server schema the emulator answers in. The current one; a module where the two schemas make a difference
    runs on both by overriding this fixture with ``params=SCHEMAS``."""
    return SCHEMA_CURRENT


@pytest.fixture
def emulator_config(request: pytest.FixtureRequest, tmp_path: Path, emulator_schema: str) -> EmulatorConfig:
    """The emulator's configuration, the one every test starts from. A module, class or test changes fields with the
    ``emulator`` marker (``pytestmark = pytest.mark.emulator(import_delay_seconds=0.3)``; the closer marker wins),
    and a test that runs under several configurations with ``indirect`` parametrisation (a dict of overrides)."""
    fields: dict[str, object] = {
        "data_dir": tmp_path / "emulator",
        "import_delay_seconds": 0.05,
        "schema": emulator_schema,
    }
    for marker in reversed(list(request.node.iter_markers("emulator"))):  # the module's first, the test's last
        fields.update(marker.kwargs)
    fields.update(getattr(request, "param", {}))
    return EmulatorConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def emulator(emulator_config: EmulatorConfig) -> AsyncIterator[RunningEmulator]:
    """The emulator over TLS on free loopback ports, seeded with ``emulator/example.toml``."""
    async with run_emulator(emulator_config) as running:
        yield running


@pytest.fixture
def threaded_emulator(emulator_config: EmulatorConfig) -> Iterator[RunningEmulator]:
    """The same emulator on a background thread, for synchronous clients such as gcapi or a subprocess."""
    with emulator_in_thread(emulator_config) as running:
        yield running


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server for the session (per test worker; each test gets its own database on it)."""
    try:
        server = PgServer.start()
    except FileNotFoundError as exc:
        pytest.skip(f"the PostgreSQL store is not tested here: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """The DSN of an empty database of this test's own (the ledger migrates it, as a user's first run does),
    dropped after the test."""
    dsn = pg_server.new_database()
    yield dsn
    pg_server.drop_database(dsn)

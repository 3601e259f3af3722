"""What a command imports before it starts is CPU paid on every run (issue 31: client CPU per GiB): the ledger's
sqlite-utils comes without numpy, which it would import only to map numpy's scalar types to SQL column types."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after ``code``."""
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_run_and_status_commands_and_the_ledger_start_without_numpy() -> None:
    loaded = loaded_after("import gcbulk.engine.cli.run, gcbulk.engine.cli.status, gcbulk.state.ledger")
    assert "sqlite_utils" in loaded
    assert "numpy" not in loaded


def test_numpy_imports_as_usual_after_the_ledger_and_the_ledger_stores_rows() -> None:
    loaded = loaded_after(
        "import gcbulk.state.ledger, numpy, sqlite_utils\n"
        "db = sqlite_utils.Database(memory=True)\n"
        "db['t'].insert({'n': int(numpy.int16(3))})\n"
        "assert db.execute('select n from t').fetchone() == (3,)"
    )
    assert {"numpy", "sqlite_utils"} <= loaded


def test_a_run_imports_its_monitoring_server_only_when_it_serves_one() -> None:
    # aiohttp's web server and the /status page: ~0.05 s of CPU at every start of a run with --metrics-address off
    # (`import gcbulk.engine.cli.run`: 0.41 → 0.38 s). A run that serves them imports them as it starts the server
    # (tests/container/test_monitoring_endpoints.py, test_status_page.py).
    loaded = loaded_after("import gcbulk.engine.cli.run")
    assert {"aiohttp.web", "gcbulk.engine.service.health", "gcbulk.engine.service.status_page"}.isdisjoint(loaded)


def test_commands_that_read_no_image_start_without_the_image_libraries() -> None:
    # SimpleITK and numpy (~0.25 s) are the content checks' (engine/plan/content.py), imported when a file is read.
    loaded = loaded_after(
        "import gcbulk.engine.cli.run, gcbulk.engine.cli.plan, gcbulk.engine.cli.status, gcbulk.engine.cli.verify"
    )
    assert {"SimpleITK", "numpy", "pydicom"}.isdisjoint(loaded)

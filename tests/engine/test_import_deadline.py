"""Every import has a deadline that fits it (issue 25): the job's ``import_timeout`` (job file ``[engine]``,
``GCBULK_IMPORT_TIMEOUT``, ``--import-timeout``), else one reckoned from the file's size and the server's observed
import times instead of one hour; and ``gcbulk status`` names imports past their expected time while the run still
waits for them."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gcbulk.emulator.context import EmulatorConfig
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine import settings
from gcbulk.engine.cli.status import collect_status, print_status
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.jobfile import JobFileError, load_job
from gcbulk.engine.upload.crashpoints import ENV_VAR
from gcbulk.engine.upload.import_deadline import MIB, import_deadline, overdue_after
from gcbulk.state.ledger import Ledger, default_ledger_path
from tests.container.conftest import write_job_file
from tests.container.test_settings_precedence import flags
from tests.engine.conftest import make_tutorial_tree, write_job


@pytest.mark.parametrize(
    ("size", "observed", "configured", "deadline"),
    [
        (1 * MIB, None, None, 300.0),  # small and nothing observed yet: the floor, not an hour
        (1 * MIB, 40.0, None, 800.0),  # a busy server (imports take 40 s lately): 20 × that
        (4096 * MIB, None, None, 20 * (5 + 512)),  # 4 GiB at 8 MiB/s expected, 20 × that
        (4096 * MIB, None, 90.0, 90.0),  # the job's import_timeout wins, whatever the size
    ],
)
def test_the_import_deadline_fits_the_file_and_the_server(
    size: int, observed: float | None, configured: float | None, deadline: float
) -> None:
    assert import_deadline(size, observed, configured) == deadline


def test_status_names_an_import_after_three_times_its_expected_time() -> None:
    assert overdue_after(1 * MIB) == 60.0
    assert overdue_after(800 * MIB) == 3 * (5 + 100)


def test_import_timeout_comes_from_the_flag_then_the_environment_then_the_job_file(tmp_path: Path) -> None:
    job = write_job_file(tmp_path, engine="import_timeout = 600")
    assert settings.resolve(job, None, {}).job.engine.import_timeout == 600.0
    resolved = settings.resolve(job, None, {"GCBULK_IMPORT_TIMEOUT": "120"})
    assert (resolved.job.engine.import_timeout, resolved.sources["engine.import_timeout"]) == (
        120.0,
        "environment GCBULK_IMPORT_TIMEOUT",
    )
    resolved = settings.resolve(job, flags(import_timeout="45"), {"GCBULK_IMPORT_TIMEOUT": "120"})
    assert (resolved.job.engine.import_timeout, resolved.sources["engine.import_timeout"]) == (
        45.0,
        "flag --import-timeout",
    )
    assert settings.resolve(job, flags(import_timeout="auto"), {}).job.engine.import_timeout is None
    assert settings.resolve(write_job_file(tmp_path / "b"), None, {}).job.engine.import_timeout is None


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf"])
def test_a_bad_import_timeout_is_refused_naming_where_it_came_from(tmp_path: Path, value: str) -> None:
    job = write_job_file(tmp_path)
    with pytest.raises(ConfigurationError, match=r"GCBULK_IMPORT_TIMEOUT must be a number of seconds above 0"):
        settings.resolve(job, None, {"GCBULK_IMPORT_TIMEOUT": value})
    with pytest.raises(ConfigurationError, match=r"--import-timeout must be a number of seconds above 0, or \"auto\""):
        settings.resolve(job, flags(import_timeout=value), {})
    with pytest.raises(JobFileError, match=r"engine.import_timeout must be a number of seconds above 0"):
        load_job(write_job_file(tmp_path / "c", engine=f'import_timeout = "{value}"'))


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    return EmulatorConfig(data_dir=tmp_path / "emulator", import_delay_seconds=0.05)


def test_status_lists_imports_past_their_expected_time_as_needing_attention(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job_file = write_job(tmp_path, threaded_emulator, engine="stagger_image_values = false\n")
    # Killed while it waits for the server's imports: the ledger says the values are attached, none imported.
    env = {
        **os.environ,
        "GRAND_CHALLENGE_AUTHORIZATION": threaded_emulator.tokens["editor"],
        ENV_VAR: "during-import-poll",
    }
    run = subprocess.run(
        [sys.executable, "-m", "gcbulk", "run", str(job_file)], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == -9, run.stdout + run.stderr

    job = load_job(job_file)
    with Ledger.open_readonly(default_ledger_path(job_file), job.binding) as ledger:
        waits = ledger.imports_in_flight()
        assert {w.socket_slug for w in waits} == {"ct-image", "airway-segmentation"}
        attached = max(datetime.fromisoformat(w.attached_at) for w in waits)
        assert collect_status(ledger, now=attached + timedelta(seconds=5))["imports_overdue"] == []
        status = collect_status(ledger, now=attached + timedelta(minutes=10))

    assert {(w["title"], w["socket"]) for w in status["imports_overdue"]} == {
        ("patient1", "ct-image"),
        ("patient1", "airway-segmentation"),
    }
    shown = io.StringIO()
    print_status(status, 0, shown)
    assert "Imports past their expected time (2), needing attention:" in shown.getvalue()
    assert "patient1: ct-image waiting 600 s for the server's import (expected about 5 s)" in shown.getvalue()
    assert "Nothing needs attention." not in shown.getvalue()

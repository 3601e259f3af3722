"""Each install a user can choose, in a fresh virtual environment as a user gets it (``pip install gcbulk``,
``gcbulk[emulator]``, ``gcbulk[postgres]``, dependencies from the package index pip is configured with, at the lock's
versions): what imports, what runs, and what says which ``pip install`` line is missing.

The base install runs a real job against an emulator that runs from this test environment (which has the extra).
Marked ``install`` (each environment takes a minute or more, most of it pip) and left out of the default run:
``pytest -m install tests/packaging/test_extras.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from gcbulk.emulator.context import EmulatorConfig
from gcbulk.emulator.server import emulator_in_thread
from gcbulk.engine.cli.demo import DEMO_USER, write_case_tree, write_job_file
from gcbulk.engine.jobfile import TOKEN_ENV

pytestmark = pytest.mark.install

REPO = Path(__file__).parents[2]
INSTALL_SECONDS = 1200
EMULATOR_ONLY = ("panimg", "cryptography", "nh3", "aiofiles")
POSTGRES_ONLY = ("psycopg",)
# A PostgreSQL ledger on a port nothing listens on: the driver's absence (or the refused connection) is the answer.
UNREACHABLE_DSN = "postgresql://gcbulk@127.0.0.1:9/gcbulk"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), REPO],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (built,) = out.glob("gcbulk-*.whl")
    return built


def fresh_install(home: Path, requirement: str) -> Path:
    """A new virtual environment with ``requirement`` installed by pip; returns its bin folder."""
    venv.create(home, with_pip=True)
    installed = subprocess.run(
        [home / "bin" / "python", "-m", "pip", "install", "--quiet", "-c", REPO / "constraints.txt", requirement],
        capture_output=True,
        text=True,
        timeout=INSTALL_SECONDS,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return home / "bin"


def importable(bin_dir: Path, modules: tuple[str, ...]) -> dict[str, bool]:
    script = "import importlib.util, json, sys; print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    found = subprocess.run(
        [bin_dir / "python", "-c", script, *modules], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(found.stdout)


def gcbulk(bin_dir: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [bin_dir / "gcbulk", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "GCBULK_METRICS_ADDRESS": "off", **(env or {})},
    )


def job_dir(tmp_path: Path) -> Path:
    """A job file (against a server nobody needs to reach: the ledger's answer comes first) and its case tree."""
    write_case_tree(tmp_path / "cases", 1)
    job = tmp_path / "job.toml"
    job.write_text(
        'reader_study = "example-study"\nbase_url = "https://127.0.0.1:9/api/v1/"\ncase_root = "cases"\n\n'
        '[[rules]]\nglob = "*-ct.mha"\nsocket = "ct-image"\n'
    )
    return job


def test_the_base_install_has_no_emulator_or_postgres_library_and_says_what_to_install(
    wheel: Path, tmp_path: Path
) -> None:
    bin_dir = fresh_install(tmp_path / "venv", str(wheel))
    assert not any(importable(bin_dir, EMULATOR_ONLY + POSTGRES_ONLY).values())

    demo = gcbulk(bin_dir, "demo", "--workdir", str(tmp_path / "demo"), cwd=tmp_path)
    assert demo.returncode == 2
    assert "pip install 'gcbulk[emulator]'" in demo.stderr
    # Writing the demo's cases needs no extra (the compose demo's one-shot service runs it on the light image).
    generated = gcbulk(
        bin_dir, "demo", "--generate-only", "--cases", "2", "--workdir", str(tmp_path / "gen"), cwd=tmp_path
    )
    assert generated.returncode == 0, generated.stderr
    assert sorted(p.name for p in (tmp_path / "gen" / "cases").iterdir()) == ["patient001", "patient002"]

    emulator = subprocess.run([bin_dir / "gcbulk-emulator"], capture_output=True, text=True, timeout=120)
    assert emulator.returncode == 2
    assert "pip install 'gcbulk[emulator]'" in emulator.stderr and "panimg" in emulator.stderr

    job = job_dir(tmp_path / "job")
    status = gcbulk(bin_dir, "status", str(job), "--offline", "--ledger", UNREACHABLE_DSN, cwd=tmp_path)
    assert status.returncode == 2
    assert "pip install 'gcbulk[postgres]'" in status.stderr


def test_the_base_install_runs_a_real_job_against_an_emulator_from_another_environment(
    wheel: Path, tmp_path: Path
) -> None:
    bin_dir = fresh_install(tmp_path / "venv", str(wheel))
    write_case_tree(tmp_path / "work" / "cases", 2)
    with emulator_in_thread(EmulatorConfig(data_dir=tmp_path / "emulator", import_delay_seconds=0.1)) as emulator:
        job = write_job_file(tmp_path / "work", emulator.base_url, emulator.ca_file)
        ran = gcbulk(bin_dir, "run", str(job), cwd=tmp_path / "work", env={TOKEN_ENV: emulator.tokens[DEMO_USER]})
        assert ran.returncode == 0, ran.stderr[-3000:]
        store = emulator.context.store
        titled = {ds.title: ds for ds in store.display_sets.values()}
        assert {"patient001", "patient002"} <= set(titled)
        assert all(len(titled[title].values) == 2 for title in ("patient001", "patient002"))


def test_the_emulator_extra_runs_the_emulator_and_still_names_the_postgres_extra(wheel: Path, tmp_path: Path) -> None:
    bin_dir = fresh_install(tmp_path / "venv", f"gcbulk[emulator] @ {wheel.as_uri()}")
    assert importable(bin_dir, EMULATOR_ONLY) == dict.fromkeys(EMULATOR_ONLY, True)
    assert importable(bin_dir, POSTGRES_ONLY) == {"psycopg": False}

    server = subprocess.Popen(
        [bin_dir / "gcbulk-emulator", "--port", "0", "--data-dir", tmp_path / "emulator"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready = None
        for line in server.stdout:  # bounded by the readiness line, or by the process ending
            if line.startswith("{"):
                ready = json.loads(line)
                break
        assert ready is not None and ready["event"] == "ready", server.stderr.read() if server.poll() else ""
        assert ready["base_url"].startswith("https://127.0.0.1:")
    finally:
        server.terminate()
        server.wait(timeout=60)

    job = job_dir(tmp_path / "job")
    status = gcbulk(bin_dir, "status", str(job), "--offline", "--ledger", UNREACHABLE_DSN, cwd=tmp_path)
    assert status.returncode == 2 and "pip install 'gcbulk[postgres]'" in status.stderr


def test_the_postgres_extra_brings_psycopg_and_no_emulator(wheel: Path, tmp_path: Path) -> None:
    bin_dir = fresh_install(tmp_path / "venv", f"gcbulk[postgres] @ {wheel.as_uri()}")
    assert importable(bin_dir, POSTGRES_ONLY) == {"psycopg": True}
    assert not any(importable(bin_dir, EMULATOR_ONLY).values())

    job = job_dir(tmp_path / "job")
    status = gcbulk(bin_dir, "status", str(job), "--offline", "--ledger", UNREACHABLE_DSN, cwd=tmp_path)
    # The driver is there: the answer is about the database, not about an install.
    assert status.returncode == 2 and "pip install" not in status.stderr
    assert "127.0.0.1" in status.stderr

    demo = gcbulk(bin_dir, "demo", "--workdir", str(tmp_path / "demo"), cwd=tmp_path)
    assert demo.returncode == 2 and "pip install 'gcbulk[emulator]'" in demo.stderr

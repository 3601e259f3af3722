"""Without an extra's libraries, the commands that need them say which ``pip install`` line brings them (exit 2), and
the ones that do not need them still work. Each runs in a child process where the extra's modules are made absent
(``sys.modules[name] = None``: Python's own marker for "this module cannot be imported"); tests/packaging/
test_extras.py does the same with real installs into fresh environments (``-m install``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gcbulk.extras import EMULATOR, POSTGRES, Extra

REPO = Path(__file__).parents[2]

_WITHOUT = textwrap.dedent(
    """
    import sys
    absent, program, *argv = sys.argv[1:]
    for name in absent.split(","):
        sys.modules[name] = None
    if program == "gcbulk":
        from gcbulk.engine.cli import main
    else:
        from gcbulk.emulator.cli import main
    sys.exit(main(argv))
    """
)


def run_without(modules: tuple[str, ...], program: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT, ",".join(modules), program, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "GCBULK_METRICS_ADDRESS": "off", "PYTHONPATH": str(REPO)},
    )


def test_an_extra_with_every_module_present_needs_no_hint() -> None:
    assert Extra("stdlib", ("json", "sqlite3")).install_hint("anything") is None


def test_a_missing_module_names_itself_the_extra_and_the_pip_line() -> None:
    hint = Extra("imaging", ("json", "gcbulk_no_such_module")).install_hint("the viewer")
    assert hint == (
        "the viewer needs gcbulk's imaging extra (gcbulk_no_such_module not installed): pip install 'gcbulk[imaging]'"
    )


def test_demo_without_the_emulator_extra_says_what_to_install(tmp_path: Path) -> None:
    done = run_without(EMULATOR.modules, "gcbulk", "demo", "--workdir", str(tmp_path / "demo"), cwd=tmp_path)
    assert done.returncode == 2
    assert "pip install 'gcbulk[emulator]'" in done.stderr
    assert "panimg, cryptography, nh3, aiofiles not installed" in done.stderr


def test_demo_generate_only_needs_no_extra(tmp_path: Path) -> None:
    done = run_without(
        EMULATOR.modules + POSTGRES.modules,
        "gcbulk",
        "demo",
        "--generate-only",
        "--cases",
        "2",
        "--workdir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in (tmp_path / "cases").iterdir()) == ["patient001", "patient002"]


def test_the_emulator_command_without_its_extra_says_what_to_install(tmp_path: Path) -> None:
    done = run_without(("nh3",), "gcbulk-emulator", "--port", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "gcbulk-emulator: the Grand Challenge emulator needs gcbulk's emulator extra (nh3 not installed): "
        "pip install 'gcbulk[emulator]'"
    )


def test_a_postgresql_ledger_without_psycopg_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "cases").mkdir()
    job = tmp_path / "job.toml"
    job.write_text(
        'reader_study = "example-study"\nbase_url = "https://127.0.0.1:9/api/v1/"\ncase_root = "cases"\n\n'
        '[[rules]]\nglob = "*.mha"\nsocket = "ct-image"\n'
    )
    dsn = "postgresql://gcbulk@127.0.0.1:9/gcbulk"
    done = run_without(POSTGRES.modules, "gcbulk", "status", str(job), "--offline", "--ledger", dsn, cwd=tmp_path)
    assert done.returncode == 2
    assert "needs gcbulk's postgres extra (psycopg not installed): pip install 'gcbulk[postgres]'" in done.stderr


@pytest.mark.parametrize(
    "command", [[name, "--help"] for name in ("plan", "run", "status", "verify", "export", "reorder")]
)
def test_the_base_commands_start_without_either_extra(command: list[str], tmp_path: Path) -> None:
    done = run_without(EMULATOR.modules + POSTGRES.modules, "gcbulk", *command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr

"""`pip install .` as a user gets it: a wheel whose only top-level name is gcbulk, and commands that run from it."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
# A wheel build and a fresh venv's install are pip's CPU: out of the timed default suite, run by .ci/run's install step
# on every Python it tests (`pytest -m install tests/packaging/test_wheel.py`).
pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the test environment already has setuptools (the test extra), and a test fetches nothing.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(out),
            str(REPO),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (built,) = out.glob("gcbulk-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the wheel installed. Its dependencies come from this test environment through a
    path entry (this machine may not reach a package index during tests); gcbulk itself only from the wheel."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # A plain path entry: the test environment's editable-install hook (a .pth there) is not run from here.
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return home


def test_the_wheel_installs_nothing_but_gcbulk_at_top_level(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        names = archive.namelist()
    assert top == {"gcbulk", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "gcbulk/py.typed" in names and "gcbulk/emulator/example.toml" in names


def _run(venv_home: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=cwd, env={"PATH": f"{venv_home / 'bin'}:/usr/bin:/bin"}, capture_output=True, text=True, timeout=120
    )


def test_the_installed_wheel_imports_and_its_commands_answer(fresh_venv: Path, tmp_path: Path) -> None:
    # Run outside the source tree, so nothing can come from the checkout.
    imported = _run(
        fresh_venv, "python", "-c", "import gcbulk, gcbulk.engine.api; print(gcbulk.__file__)", cwd=tmp_path
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip().startswith(str(fresh_venv)), "gcbulk must come from the installed wheel"
    for command in ("gcbulk", "gcbulk-emulator"):
        shown = _run(fresh_venv, command, "--help", cwd=tmp_path)
        assert shown.returncode == 0 and "usage:" in shown.stdout, shown.stderr


def test_the_demo_runs_from_the_installed_wheel(fresh_venv: Path, tmp_path: Path) -> None:
    demo = _run(
        fresh_venv,
        "gcbulk",
        "demo",
        "--cases",
        "1",
        "--workdir",
        str(tmp_path / "demo"),
        "--metrics-address",
        "off",
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stderr
    assert "cases 1/1 done, 0 failed" in demo.stderr

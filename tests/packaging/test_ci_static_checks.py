""".ci/run checks the code before it tests it: ``ruff check .`` (pyproject's lint rules, import order included) and
``ruff format --check .``, each failing CI on its own, with the ruff the test extra pins. Run here on small files
under this repository's own ruff settings, so what CI refuses is shown, not assumed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
RUFF = Path(sys.executable).with_name("ruff")


def ruff(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RUFF), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project with this repository's ruff settings (its pyproject.toml)."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_ci_run_runs_both_checks_before_the_tests_and_stops_on_the_first_failure() -> None:
    text = (REPO / ".ci" / "run").read_text()
    assert "set -euo pipefail" in text  # a failing check ends the script with its exit code
    suite = text[text.index("suite() {") : text.index("\n}\n", text.index("suite() {"))]
    tests = suite.index("-m pytest")
    assert suite.index('ruff" check .') < tests and suite.index('ruff" format --check .') < tests


def test_an_unsorted_import_fails_the_lint(project: Path) -> None:
    (project / "module.py").write_text("import sys\nimport os\n\nprint(os.sep, sys.argv)\n")
    result = ruff("check", ".", cwd=project)
    assert result.returncode == 1 and "I001" in result.stdout, result.stdout + result.stderr


def test_code_ruff_would_reformat_fails_the_format_check(project: Path) -> None:
    (project / "module.py").write_text("x = {  'a':1 }\n")
    result = ruff("format", "--check", ".", cwd=project)
    assert result.returncode == 1 and "1 file would be reformatted" in result.stdout, result.stdout + result.stderr

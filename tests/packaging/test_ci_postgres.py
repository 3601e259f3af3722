""".ci/postgres-server, which .ci/run calls before the suites: PostgreSQL's server binaries are looked for where the
tests look, Debian's ``postgresql`` package is installed when they are missing (as root, or with password-less sudo),
and when that cannot be done one line says the PostgreSQL tests will be skipped and why — never a failure.

Run with a PATH of stubs (``id``, ``sudo``, ``apt-get``) and a few real tools, so nothing is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.ci_stubs import stub, stub_path

REPO = Path(__file__).parents[2]
SCRIPT = REPO / ".ci" / "postgres-server"
TOOLS = ("readlink", "dirname", "tail", "env", "mktemp", "rm", "cat", "mkdir", "touch", "chmod", "true")
SKIPPED = "the PostgreSQL ledger tests will be skipped"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return stub_path(tmp_path, TOOLS)


def run(path: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": str(path),
        "GCBULK_CI_PG_LIB": str(tmp_path / "no-debian-postgresql"),
        "CALLS": str(tmp_path / "calls"),
        **env,
    }
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)], env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def calls(tmp_path: Path) -> list[str]:
    file = tmp_path / "calls"
    return file.read_text().splitlines() if file.exists() else []


def apt_get(path: Path, *, installs: bool = True, fails_until_updated: bool = False) -> None:
    """An apt-get that records its arguments; ``install`` puts initdb and pg_ctl on PATH (or fails, saying why)."""
    install = (
        (
            'mkdir -p "$(dirname "$0")/pgbin"; touch "$(dirname "$0")/initdb" "$(dirname "$0")/pg_ctl"; '
            'chmod +x "$(dirname "$0")/initdb"; exit 0'
        )
        if installs
        else ('echo "E: Unable to locate package postgresql" >&2; exit 100')
    )
    updated = (
        '[ -e "$(dirname "$0")/updated" ] || { echo "E: lists missing" >&2; exit 100; }; '
        if (fails_until_updated)
        else ""
    )
    stub(
        path,
        "apt-get",
        f'echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> "$CALLS"\n'
        f'case " $* " in *" update "*) touch "$(dirname "$0")/updated"; exit 0;; esac\n'
        f"{updated}{install}",
    )


def test_binaries_already_there_install_nothing_and_say_nothing(path: Path, tmp_path: Path) -> None:
    apt_get(path)
    pg = tmp_path / "pg" / "bin"
    pg.mkdir(parents=True)
    (pg / "initdb").touch()
    (pg / "pg_ctl").touch()
    for env in ({"GCBULK_TEST_PG_BIN": str(pg)}, {"GCBULK_CI_PG_LIB": str(tmp_path / "pg-lib")}):
        if "GCBULK_CI_PG_LIB" in env:  # Debian's layout: <lib>/<version>/bin
            shutil.copytree(pg, tmp_path / "pg-lib" / "15" / "bin")
        result = run(path, tmp_path, **env)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert calls(tmp_path) == []


def test_missing_binaries_are_installed_quietly_and_non_interactively_as_root(path: Path, tmp_path: Path) -> None:
    apt_get(path, fails_until_updated=True)
    result = run(path, tmp_path)
    assert result.returncode == 0 and SKIPPED not in result.stdout
    assert result.stdout.splitlines() == ["== installing Debian's postgresql package for the PostgreSQL ledger tests"]
    assert calls(tmp_path) == [
        "DEBIAN_FRONTEND=noninteractive -y -qq -o Dpkg::Use-Pty=0 install --no-install-recommends postgresql",
        "DEBIAN_FRONTEND=noninteractive -y -qq -o Dpkg::Use-Pty=0 update",
        "DEBIAN_FRONTEND=noninteractive -y -qq -o Dpkg::Use-Pty=0 install --no-install-recommends postgresql",
    ]


def test_a_user_with_password_less_sudo_installs_through_it(path: Path, tmp_path: Path) -> None:
    apt_get(path)
    stub(path, "sudo", '[ "$1" = -n ] || exit 1; shift; echo "sudo $1" >> "$CALLS"; exec "$@"')
    result = run(path, tmp_path, STUB_UID="1000")
    assert result.returncode == 0 and SKIPPED not in result.stdout
    assert calls(tmp_path)[-2:] == [
        "sudo env",
        "DEBIAN_FRONTEND=noninteractive -y -qq -o Dpkg::Use-Pty=0 install --no-install-recommends postgresql",
    ]


@pytest.mark.parametrize(
    "case, expected",
    [
        (
            "no apt-get",
            "there is no apt-get to install them (install PostgreSQL, or set GCBULK_TEST_PG_BIN to its bin folder)",
        ),
        ("not root, no sudo", "installing Debian's postgresql package needs root or password-less sudo"),
        ("sudo asks for a password", "installing Debian's postgresql package needs root or password-less sudo"),
        (
            "no such package",
            "apt-get could not install Debian's postgresql package (E: Unable to locate package postgresql)",
        ),
    ],
)
def test_when_it_cannot_install_one_line_says_the_tests_will_be_skipped_and_why(
    path: Path, tmp_path: Path, case: str, expected: str
) -> None:
    env = {}
    if case != "no apt-get":
        apt_get(path, installs=case != "no such package")
    if case.startswith("not root") or case.startswith("sudo"):
        env["STUB_UID"] = "1000"
    if case == "sudo asks for a password":
        stub(path, "sudo", 'echo "sudo: a password is required" >&2; exit 1')
    result = run(path, tmp_path, **env)
    assert result.returncode == 0
    lines = [line for line in result.stdout.splitlines() if SKIPPED in line]
    assert lines == [f"== PostgreSQL server binaries not found and {expected}: {SKIPPED}"]
    assert result.stderr == ""


def test_ci_run_calls_it_before_the_suites_and_never_fails_on_it() -> None:
    text = (REPO / ".ci" / "run").read_text()
    assert ".ci/postgres-server || true" in text
    assert text.index(".ci/postgres-server") < text.index('suite "$PYTHON" .venv\n')
    assert os.access(SCRIPT, os.X_OK)

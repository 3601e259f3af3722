""".ci/chromium, which .ci/run calls before the suites: Debian's ``chromium`` is installed for the browser tests when
it is missing (as root, or with password-less sudo), and when that cannot be done one line says the browser tests
will be skipped and why — never a failure.

Run with a PATH of stubs (``id``, ``sudo``, ``apt-get``) and a few real tools, so nothing is installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.packaging.ci_stubs import stub, stub_path

REPO = Path(__file__).parents[2]
SCRIPT = REPO / ".ci" / "chromium"
TOOLS = ("tail", "env", "mktemp", "rm", "touch", "chmod", "dirname", "true")
SKIPPED = "the browser tests will be skipped"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return stub_path(tmp_path, TOOLS)


def apt_get(path: Path, *, installs: bool = True) -> None:
    """An apt-get that records its arguments; ``install`` puts a chromium on PATH, or fails saying why."""
    install = (
        'touch "$(dirname "$0")/chromium"; chmod +x "$(dirname "$0")/chromium"; exit 0'
        if installs
        else 'echo "E: Unable to locate package chromium" >&2; exit 100'
    )
    stub(path, "apt-get", f'echo "$*" >> "$CALLS"\ncase " $* " in *" update "*) exit 0;; esac\n{install}')


def run(path: Path, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls = tmp_path / "calls"
    done = subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        env={"PATH": str(path), "CALLS": str(calls), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_chromium_already_there_installs_nothing_and_says_nothing(path: Path, tmp_path: Path) -> None:
    stub(path, "chromium", "exit 0")
    apt_get(path)
    done, calls = run(path, tmp_path)
    assert (done.returncode, done.stdout, calls) == (0, "", [])


def test_missing_chromium_is_installed_as_root_quietly(path: Path, tmp_path: Path) -> None:
    apt_get(path)
    done, calls = run(path, tmp_path)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["== installing Debian's chromium package for the browser tests (a few minutes)"]
    assert calls == ["-y -qq -o Dpkg::Use-Pty=0 install --no-install-recommends chromium"]
    assert (path / "chromium").exists()


def test_without_root_or_sudo_one_line_says_the_browser_tests_will_be_skipped(path: Path, tmp_path: Path) -> None:
    apt_get(path)
    done, calls = run(path, tmp_path, STUB_UID="1000")
    assert done.returncode == 0 and calls == []
    assert done.stdout == (
        f"== chromium not found and installing Debian's chromium package needs root or password-less sudo: {SKIPPED}\n"
    )


def test_an_install_that_fails_says_apt_gets_reason_and_still_succeeds(path: Path, tmp_path: Path) -> None:
    apt_get(path, installs=False)
    done, calls = run(path, tmp_path)
    assert done.returncode == 0
    assert "apt-get could not install Debian's chromium package (E: Unable to locate package chromium)" in done.stdout
    assert SKIPPED in done.stdout
    assert [call.split()[-1] for call in calls] == ["chromium", "update", "chromium"]  # installed, updated, again


def test_ci_run_calls_it_before_the_suites() -> None:
    text = (REPO / ".ci" / "run").read_text()
    assert text.index(".ci/chromium || true") < text.index('suite "$PYTHON" .venv')

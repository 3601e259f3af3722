"""The ledger's process lock does not depend on a POSIX-only module: where ``fcntl`` does not exist (as on Windows),
the ledger still opens, and a second process is still refused while the first one holds it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.state.conftest import BINDING

REPO = Path(__file__).resolve().parents[2]

# Runs with fcntl unimportable, as on Windows; then opens the ledger and reports how it went.
_OPEN_WITHOUT_FCNTL = textwrap.dedent(
    """
    import sys

    class NoFcntl:
        def find_spec(self, name, path=None, target=None):
            if name == "fcntl":
                raise ModuleNotFoundError("No module named 'fcntl' (as on Windows)", name=name)
            return None

    sys.modules.pop("fcntl", None)
    sys.meta_path.insert(0, NoFcntl())
    from gcbulk.state.ledger import JobBinding, Ledger
    binding = JobBinding(reader_study=sys.argv[2], base_url=sys.argv[3], case_root=sys.argv[4])
    try:
        ledger = Ledger.open(sys.argv[1], binding)
    except Exception as exc:
        print(type(exc).__name__, exc, flush=True)
        sys.exit(3)
    print("opened", "fcntl" in sys.modules, flush=True)
    sys.stdin.read()
    ledger.close()
    """
)


def _open_without_fcntl(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _OPEN_WITHOUT_FCNTL,
            str(path),
            BINDING.reader_study,
            BINDING.base_url,
            BINDING.case_root,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


@pytest.mark.sqlite_only
def test_without_fcntl_the_ledger_opens_and_a_second_process_is_refused(tmp_path: Path) -> None:
    ledger_path = tmp_path / "job.ledger.sqlite"
    first = _open_without_fcntl(ledger_path)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().split() == ["opened", "False"]
        second = _open_without_fcntl(ledger_path)
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 3, output
        assert output.startswith("LedgerLocked")
        assert "in use by another gcbulk process" in output
    finally:
        first.communicate(input="", timeout=60)
    assert first.returncode == 0
    # Released on close: a third process opens it.
    third = _open_without_fcntl(ledger_path)
    try:
        assert third.stdout is not None
        assert third.stdout.readline().split() == ["opened", "False"]
    finally:
        third.communicate(input="", timeout=60)

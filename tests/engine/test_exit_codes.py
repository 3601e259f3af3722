"""The README's exit-code table, line by line, as a script sees it: real ``gcbulk`` processes against the emulator.

0 all done · 1 cases failed or blocked (this run or an earlier one) · 2 configuration or environment · 70 a bug
(tests/state/test_ledger_faults.py) · 130 / 143 stopped by SIGINT / SIGTERM with work left · 141 a reader that went
away. A signal at any moment, start-up included, never prints a traceback.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from gcbulk.exit_codes import EXIT_INTERRUPTED_SIGINT, EXIT_INTERRUPTED_SIGTERM, StopSignal
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.engine.test_run_command import REPO, gcbulk, gcbulk_env
from tests.imaging import make_mha, make_unimportable_mha

RUN_BOUND_SECONDS = 120


def test_version_names_the_installed_package() -> None:
    import gcbulk as package

    result = subprocess.run(
        [sys.executable, "-m", "gcbulk", "--version"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"gcbulk {package.__version__}"


def test_a_signal_at_any_moment_exits_with_its_code_and_no_traceback_and_the_job_resumes(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    cases = make_tutorial_tree(tmp_path / "cases", 3)
    for n in (1, 2, 3):
        make_mha(cases / f"patient{n}" / "ct.mha", (20, 256, 256), seed=n)  # 2.5 MiB each
    job = write_job(tmp_path, threaded_emulator, engine='part_size = "5 MiB"\nparts_in_flight = 2\n')
    # Parts crawl, so a run lasts long enough for signals to land in every phase: while Python imports gcbulk, while
    # the ledger opens and the plan walks the tree, while parts are on the wire, while imports are awaited.
    threaded_emulator.context.faults.replace([FaultRule(match="PUT s3", bandwidth_bytes_per_second=2 * 1024**2)])
    rng = random.Random(30)
    moments = [0.0, 0.02, 0.1] + sorted(rng.uniform(0.2, 5.0) for _ in range(5))
    env = gcbulk_env(threaded_emulator.tokens["editor"])
    seen: list[tuple[float, str, int]] = []
    for n, moment in enumerate(moments):
        signum = signal.SIGINT if n % 2 == 0 else signal.SIGTERM
        process = subprocess.Popen(
            [sys.executable, "-m", "gcbulk", "run", str(job), "--drain", "5"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        wait_until_gcbulk_catches_sigterm(process.pid)
        time.sleep(moment)  # the random moment of the signal, not a wait for something
        process.send_signal(signum)
        out, err = process.communicate(timeout=RUN_BOUND_SECONDS)
        seen.append((round(moment, 2), signum.name, process.returncode))
        assert "Traceback" not in out + err, f"at {moment:.2f} s: {err}"
        expected = EXIT_INTERRUPTED_SIGINT if signum == signal.SIGINT else EXIT_INTERRUPTED_SIGTERM
        if process.returncode == 0:  # the run finished before the signal: then everything is done, and it says so
            assert "cases 3/3 done" in err or "with every case done" in err, err
            continue
        assert process.returncode == expected, f"at {moment:.2f} s: {process.returncode}\n{err}"
        assert "run it again to resume" in err, err
        summary = [line for line in err.splitlines() if line.startswith("gcbulk run: cases ")]
        assert all("· stopped ·" in line and "ETA" not in line for line in summary), summary
    threaded_emulator.context.faults.replace([])
    final = gcbulk("run", str(job), token=threaded_emulator.tokens["editor"])
    assert final.returncode == 0, (seen, final.stderr)
    titles = sorted(ds.title for ds in threaded_emulator.context.store.display_sets.values())
    assert titles == ["patient1", "patient2", "patient3"], seen


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_that_cpython_turns_into_another_error_still_reads_as_that_stop(
    signum: signal.Signals, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Seen in CI: a SIGTERM landing in ssl's `from _ssl import RAND_egd` came out as "TypeError: expected a message
    # argument" with a traceback. Here the signal lands in code that, like CPython's C import code, replaces the
    # exception the handler raised.
    import gcbulk.engine.cli as cli
    import gcbulk.exit_codes

    monkeypatch.setattr(gcbulk.exit_codes, "_received_stop_signal", None)

    def loading_commands_when_the_signal_lands(only: str | None = None) -> dict[str, object]:
        try:
            signal.raise_signal(signum)
        except KeyboardInterrupt:
            raise TypeError("expected a message argument") from None
        raise AssertionError("the signal did not reach gcbulk's handler")

    monkeypatch.setattr(cli, "_available_commands", loading_commands_when_the_signal_lands)
    handlers = {each: signal.getsignal(each) for each in (signal.SIGTERM, signal.SIGINT)}
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a fresh process: main installs its own
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = cli.main(["status", "job.toml"])
    finally:
        for each, handler in handlers.items():
            signal.signal(each, handler)
    expected = EXIT_INTERRUPTED_SIGTERM if signum == signal.SIGTERM else EXIT_INTERRUPTED_SIGINT
    assert code == expected
    err = capsys.readouterr().err
    assert f"gcbulk status: stopped by {signum.name}" in err
    assert "run it again to resume" in err
    assert "TypeError" not in err and "Traceback" not in err


def test_an_error_a_command_raises_after_a_stop_signal_is_that_stop_not_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    import gcbulk.exit_codes
    from gcbulk.engine.cli.guard import run_guarded

    monkeypatch.setattr(gcbulk.exit_codes, "_received_stop_signal", signal.SIGTERM)

    def command_whose_import_the_signal_landed_in() -> int:
        raise TypeError("expected a message argument")

    with pytest.raises(StopSignal) as stopped:
        run_guarded("run", command_whose_import_the_signal_landed_in)
    assert stopped.value.exit_code == EXIT_INTERRUPTED_SIGTERM


def wait_until_gcbulk_catches_sigterm(pid: int, deadline_seconds: float = 30.0) -> None:
    """Until gcbulk's own code runs: its ``main`` catches SIGTERM first thing (``SigCgt`` in /proc). Before that the
    interpreter itself is starting (``site``), whose reaction to a signal is Python's, not gcbulk's."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.001)
    raise AssertionError("gcbulk's main never started")


def test_a_rerun_that_leaves_earlier_failures_in_the_ledger_exits_1_and_says_so(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    make_unimportable_mha(tmp_path / "cases" / "patient2" / "seg.mha")  # passes the plan; the server's import fails
    job = write_job(
        tmp_path,
        threaded_emulator,
        rules='[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n\n[[rules]]\nglob = "seg.mha"\n'
        'socket = "generic-medical-image"\n',
    )
    token = threaded_emulator.tokens["editor"]
    first = gcbulk("run", str(job), token=token)
    assert first.returncode == 1, first.stderr
    again = gcbulk("run", str(job), token=token)
    assert again.returncode == 1, again.stderr
    assert "1 case(s) failed in an earlier run and are still failed" in again.stderr
    assert "gcbulk retry-failed" in again.stderr


def test_every_line_of_the_readmes_exit_code_table_is_a_code_of_the_module_shown_by_a_test() -> None:
    import re

    import gcbulk.exit_codes as module

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Exit codes") :]
    section = section[: section.index("\n#", 1)]  # up to the next heading
    rows = [line for line in section.splitlines() if re.match(r"\| `\d+`", line)]
    documented: set[int] = set()
    for row in rows:
        codes = {int(code) for code in re.findall(r"`(\d+)`", row.split("|")[1])}
        documented |= codes
        shown_by = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row.split("|")[-2])  # the last column
        assert shown_by, f"no test named for {row[:40]}"
        for path, name in shown_by:
            assert re.search(rf"^(async )?def {name}\(", (REPO / path).read_text(), re.M), f"{path}::{name} is gone"
    defined = {value for name, value in vars(module).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert documented == defined

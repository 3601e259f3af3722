"""One diagnosis per cause, the same from every command (and from follow mode), with what to do and exit 2 — never
"internal error … this is a bug" for what the machine or the job file did. Real ``gcbulk`` processes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gcbulk.emulator.server import RunningEmulator
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.engine.test_run_command import REPO, gcbulk, gcbulk_env

SLUG_MESSAGE = "reader study 'exmaple-study' was not found at"


def test_a_misspelt_slug_gets_the_same_diagnosis_from_every_command(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = write_job(tmp_path, threaded_emulator)
    job.write_text(job.read_text().replace('"example-study"', '"exmaple-study"'))
    token = threaded_emulator.tokens["editor"]
    commands = [
        ["plan", str(job)],
        ["plan", str(job), "--dry-run"],
        ["run", str(job)],
        ["retry-failed", str(job)],
        ["verify", str(job)],
        ["export", "--job", str(job), "--out", str(tmp_path / "out")],
        ["reorder", "--job", str(job), "--by", "title"],
    ]
    for command in commands:
        result = gcbulk(*command, token=token)
        assert result.returncode == 2, (command, result.stderr)
        assert SLUG_MESSAGE in result.stderr and "check the slug" in result.stderr, (command, result.stderr)
        assert "may not add display sets" not in result.stderr, command  # not a permission problem: the slug
    assert not threaded_emulator.context.store.display_sets


def test_follow_mode_with_a_wrong_token_says_what_the_cli_says(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = write_job(tmp_path, threaded_emulator)
    one_shot = gcbulk("run", str(job), token="not-the-token")
    follow = gcbulk("run", str(job), "--follow", "--metrics-address", "off", token="not-the-token")
    assert one_shot.returncode == follow.returncode == 2
    fatal = next(json.loads(line) for line in follow.stdout.splitlines() if "fatal_configuration_error" in line)
    hint = "the server refused the API token (401); set a valid token in $GRAND_CHALLENGE_AUTHORIZATION"
    assert hint in fatal["message"] and hint in one_shot.stderr
    assert "not-the-token" not in follow.stdout + follow.stderr + one_shot.stderr


def test_an_unreachable_server_is_the_same_exit_2_from_verify_and_export(tmp_path: Path) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = tmp_path / "job.toml"
    job.write_text(
        'reader_study = "example-study"\nbase_url = "https://127.0.0.1:9/api/v1/"\ncase_root = "cases"\n\n'
        '[[rules]]\nposition = 1\nsocket = "ct-image"\n'
    )
    assert gcbulk("plan", str(job), "--offline", token="any-token").returncode == 0  # a ledger for verify
    for command in (["verify", str(job)], ["export", "--job", str(job), "--out", str(tmp_path / "out")]):
        result = gcbulk(*command, token="any-token")
        assert result.returncode == 2, (command, result.stderr)
        assert "the server did not answer" in result.stderr, result.stderr
        assert "check the server address and the network" in result.stderr


def _read_only(folder: Path, *args: str) -> list[str]:
    """``gcbulk args`` with ``folder`` read-only: a read-only bind mount in a private mount namespace when this runs as
    root (whom permissions do not stop), else the folder's own permissions (restored by the caller)."""
    command = shlex.join([sys.executable, "-m", "gcbulk", *args])
    if os.geteuid() != 0:
        return ["sh", "-c", f"chmod a-w {shlex.quote(str(folder))} && exec {command}"]
    where = shlex.quote(str(folder))
    return [
        "unshare",
        "--mount",
        "sh",
        "-c",
        f"mount --bind {where} {where} && mount -o remount,bind,ro {where} && exec {command}",
    ]


def _can_make_read_only(folder: Path) -> bool:
    if os.geteuid() != 0:
        return True
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(_read_only(folder, "--version"), capture_output=True, timeout=60, cwd=REPO)
    return probe.returncode == 0


def test_a_read_only_job_folder_is_a_clear_exit_2_from_every_command(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = write_job(tmp_path, threaded_emulator)
    if not _can_make_read_only(tmp_path):
        pytest.skip("no way to make a folder read-only for root here (unshare --mount)")
    env = gcbulk_env(threaded_emulator.tokens["editor"])
    try:
        for when in ("before any run", "after a run"):
            for command in (["plan", str(job)], ["run", str(job)], ["verify", str(job)]):
                if when == "before any run" and command[0] == "verify":
                    continue  # no ledger yet: verify says to plan first (another test)
                result = subprocess.run(
                    _read_only(tmp_path, *command), env=env, capture_output=True, text=True, timeout=120, cwd=REPO
                )
                assert result.returncode == 2, (when, command, result.stderr)
                assert "this is a bug" not in result.stderr and "Traceback" not in result.stderr
                assert "read-only" in result.stderr or "permission denied" in result.stderr, result.stderr
                assert "make the job's folder writable" in result.stderr, result.stderr
            if when == "before any run":
                os.chmod(tmp_path, 0o755)
                assert gcbulk("run", str(job), token=threaded_emulator.tokens["editor"]).returncode == 0
    finally:
        os.chmod(tmp_path, 0o755)


def test_an_event_log_planted_as_a_symlink_is_refused_with_exit_2(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = write_job(tmp_path, threaded_emulator)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not gcbulk's\n")
    (tmp_path / "job.events.jsonl").symlink_to(elsewhere)
    result = gcbulk("run", str(job), token=threaded_emulator.tokens["editor"])
    assert result.returncode == 2, result.stderr
    assert "this is a bug" not in result.stderr
    assert "job.events.jsonl" in result.stderr and "symbolic link" in result.stderr, result.stderr
    assert elsewhere.read_text() == "not gcbulk's\n"


def test_a_reader_that_goes_away_ends_report_quietly_with_141(tmp_path: Path) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    job = tmp_path / "job.toml"
    job.write_text(
        'reader_study = "example-study"\nbase_url = "https://127.0.0.1:9/api/v1/"\ncase_root = "cases"\n\n'
        '[[rules]]\nposition = 1\nsocket = "ct-image"\n'
    )
    assert gcbulk("plan", str(job), "--offline", token="any-token").returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "gcbulk", "report", str(job), "--format", "csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before the first line (`| head -0`): every write meets EPIPE
    _, err = process.communicate(timeout=60)
    assert process.returncode == 141
    assert err == b""

"""The API token never reaches a file or a stream, whatever the server echoes back (issue 14)."""

from __future__ import annotations

import stat
from pathlib import Path

from gcbulk.emulator.server import RunningEmulator
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.engine.test_run_command import gcbulk
from tests.security.hostile import echo_authorization, hostile_server


def _files_holding(root: Path, token: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and token.encode() in p.read_bytes()]


def test_a_server_echoing_the_authorization_header_never_gets_the_token_into_any_file_or_stream(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    token = threaded_emulator.tokens["editor"]
    make_tutorial_tree(tmp_path / "cases", 2)
    job = write_job(tmp_path, threaded_emulator)
    with hostile_server(threaded_emulator) as hostile:
        job.write_text(job.read_text().replace(threaded_emulator.base_url, hostile.base_url))
        # Every value PATCH fails with the header echoed (ledger last_error, events, summary, status, report);
        # the answer list as well (export's log and its stop message).
        hostile.tricks[("PATCH", "/")] = echo_authorization(400)
        hostile.tricks[("GET", "/reader-studies/answers/")] = echo_authorization(400)
        run = gcbulk("run", str(job), "--log-format", "json", token=token)
        status = gcbulk("status", str(job), token=token)
        status_json = gcbulk("status", str(job), "--json", token=token)
        report_csv = gcbulk("report", str(job), "--format", "csv", token=token)
        report_file = gcbulk(
            "report", str(job), "--format", "json", "--out", str(tmp_path / "report.json"), token=token
        )
        export = gcbulk(
            "export",
            "--base-url",
            hostile.base_url,
            "--reader-study",
            "example-study",
            "--out",
            str(tmp_path / "export"),
            token=token,
        )
        assert any(hit.startswith("PATCH") for hit in hostile.hits)

    assert run.returncode == 1, run.stderr
    assert "[REDACTED]" in run.stderr + run.stdout  # the echo arrived, scrubbed
    assert "patient1" in status.stdout and report_csv.returncode == 0 and report_file.returncode == 0
    assert export.returncode != 0 and "gcbulk export" in export.stderr
    streams = {
        "run": run,
        "status": status,
        "status --json": status_json,
        "report csv": report_csv,
        "report --out": report_file,
        "export": export,
    }
    for name, result in streams.items():
        assert token not in result.stdout and token not in result.stderr, name
    assert (tmp_path / "job.events.jsonl").is_file() and (tmp_path / "report.json").is_file()
    assert _files_holding(tmp_path, token) == []  # ledger (and WAL), event file, report, export folder


def test_events_and_reports_are_created_readable_by_the_owner_only(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    token = threaded_emulator.tokens["editor"]
    make_tutorial_tree(tmp_path / "cases", 1)
    job = write_job(tmp_path, threaded_emulator)
    assert gcbulk("run", str(job), token=token).returncode == 0
    assert gcbulk("report", str(job), "--out", str(tmp_path / "r.csv"), token=token).returncode == 0
    for written in (tmp_path / "job.events.jsonl", tmp_path / "r.csv"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600, written

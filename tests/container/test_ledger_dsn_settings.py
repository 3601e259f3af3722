"""The ledger's location as a PostgreSQL DSN (issue 13): kept as the string it is, its password never shown — not in
``config show``, ``status --json``, a report, a plan, an error or a repr — the event log beside the job file; a file
path works exactly as before. And the worker id: a flag, a variable or ``<hostname>-<pid>``, checked."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
from pathlib import Path

import pytest

from gcbulk.engine import settings
from gcbulk.engine.cli import build_parser, main
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.ledger_location import dsn_passwords, shown_ledger
from gcbulk.redaction import redact_text
from tests.container.conftest import write_job_file

# Three characters: under the redactor's minimum (gcbulk/redaction.py), so nothing but shown_dsn keeps it out of the
# output these tests read — the redacting streams would otherwise hide a leak.
SHORT = "qZ8"
LONG = "s3cret-Ledger-pw"
UNREACHABLE = f"postgresql://gcbulk:{SHORT}@127.0.0.1:9/gcbulk"  # port 9 (discard): nothing listens


def flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    return parser.parse_args(list(argv))


def with_password(dsn: str, password: str) -> str:
    return dsn.replace("gcbulk@", f"gcbulk:{password}@", 1)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_dsn_flag_is_kept_as_a_string_and_shown_without_its_password(tmp_path: Path, scheme: str) -> None:
    job = write_job_file(tmp_path / "etc")
    dsn = f"{scheme}://gcbulk:{SHORT}@db.internal:5432/gcbulk?sslmode=require"
    resolved = settings.resolve(job, flags("--ledger", dsn), {})

    assert resolved.ledger == dsn and isinstance(resolved.ledger, str)  # a Path would have made it "postgresql:/…"
    assert resolved.sources["ledger"] == "flag --ledger"
    assert resolved.ledger_shown == f"{scheme}://gcbulk:***@db.internal:5432/gcbulk?sslmode=require"
    assert resolved.events == tmp_path / "etc" / "job.events.jsonl"  # beside the job file
    shown = json.dumps({name: [value, source] for name, (value, source) in resolved.effective().items()})
    assert SHORT not in shown and SHORT not in repr(resolved)
    assert resolved.effective()["ledger"] == (resolved.ledger_shown, "flag --ledger")


def test_a_dsn_in_gcbulk_ledger_is_kept_as_a_string_and_the_events_go_beside_the_job_file(tmp_path: Path) -> None:
    job = write_job_file(tmp_path / "etc")
    resolved = settings.resolve(job, None, {"GCBULK_LEDGER": f" {UNREACHABLE} "})
    assert resolved.ledger == UNREACHABLE
    assert resolved.sources["ledger"] == "environment GCBULK_LEDGER"
    assert resolved.events == tmp_path / "etc" / "job.events.jsonl"
    explicit = settings.resolve(job, None, {"GCBULK_LEDGER": UNREACHABLE, "GCBULK_EVENTS": str(tmp_path / "e.jsonl")})
    assert explicit.events == tmp_path / "e.jsonl"


def test_a_file_path_is_resolved_exactly_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = write_job_file(tmp_path / "etc")
    monkeypatch.chdir(tmp_path)
    by_flag = settings.resolve(job, flags("--ledger", "state/job.ledger.sqlite"), {})
    assert by_flag.ledger == tmp_path / "state" / "job.ledger.sqlite" and isinstance(by_flag.ledger, Path)
    assert by_flag.events == tmp_path / "state" / "job.events.jsonl"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    by_env = settings.resolve(job, None, {"GCBULK_LEDGER": "~/x.sqlite"})
    assert by_env.ledger == tmp_path / "home" / "x.sqlite"
    default = settings.resolve(job, None, {})
    assert default.ledger == tmp_path / "etc" / "job.ledger.sqlite" and default.sources["ledger"] == "default"
    assert default.ledger_shown == str(default.ledger)
    assert default.events == tmp_path / "etc" / "job.events.jsonl"


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://gcbulk:{LONG}@h:5432/db",
        f"postgresql://gcbulk@h:5432/db?sslmode=require&password={LONG}",
        f"postgres://gcbulk:{LONG}@h1:5432,h2:5433/db",
    ],
)
def test_the_password_is_found_wherever_the_dsn_holds_it_and_never_shown(dsn: str) -> None:
    assert dsn_passwords(dsn) == {LONG}
    assert LONG not in shown_ledger(dsn)
    settings.add_arguments(parser := argparse.ArgumentParser())
    parser.parse_args(["--ledger", dsn])
    # Registered with the one redaction path: a driver's message or a traceback that quotes the DSN is scrubbed too.
    assert LONG not in redact_text(f"could not connect: {dsn}")


def test_a_percent_encoded_password_is_hidden_as_written_and_as_decoded() -> None:
    dsn = "postgresql://gcbulk:pa%40ss%2Fword@h/db"
    assert dsn_passwords(dsn) == {"pa%40ss%2Fword", "pa@ss/word"}
    assert shown_ledger(dsn) == "postgresql://gcbulk:***@h/db"
    settings.add_arguments(parser := argparse.ArgumentParser())
    parser.parse_args(["--ledger", dsn])
    scrubbed = redact_text(f"could not connect: {dsn} (pa@ss/word)")
    assert "pa%40ss%2Fword" not in scrubbed and "pa@ss/word" not in scrubbed


def test_every_command_on_a_jobs_ledger_accepts_a_dsn_and_says_so_in_its_help() -> None:
    parser = build_parser()
    for command in ("plan", "status", "run", "verify", "report", "retry-failed"):
        args = parser.parse_args([command, "job.toml", "--ledger", UNREACHABLE])
        assert args.ledger == UNREACHABLE, command
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = " ".join(subparsers.choices["run"].format_help().split())
    assert "PostgreSQL DSN" in help_text and "beside the job file when the ledger is a PostgreSQL DSN" in help_text


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--offline", "--json"],
        ["report", "--format", "json"],
        ["plan", "--offline", "--json"],
        ["retry-failed", "--no-run"],
    ],
)
def test_an_unreachable_database_is_an_error_that_hides_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    job = write_job_file(tmp_path / "etc")
    code = main([argv[0], str(job), *argv[1:], "--ledger", UNREACHABLE])
    out, err = capsys.readouterr()
    assert code == 2
    assert "gcbulk:***@127.0.0.1:9/gcbulk" in err and SHORT not in out + err


def test_config_show_prints_the_dsn_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job_file(tmp_path / "etc")
    monkeypatch.setenv("GCBULK_LEDGER", UNREACHABLE)
    assert main(["config", "show", str(job), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["ledger"] == {
        "value": "postgresql://gcbulk:***@127.0.0.1:9/gcbulk",
        "source": "environment GCBULK_LEDGER",
    }
    assert SHORT not in out
    assert main(["config", "show", str(job)]) == 0
    assert SHORT not in capsys.readouterr().out


def test_plan_status_and_report_on_a_postgresql_ledger_never_show_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_database: str
) -> None:
    # The test server trusts 127.0.0.1, so any password is accepted: it is in the DSN only to be hidden.
    dsn = with_password(pg_database, SHORT)
    job = write_job_file(tmp_path / "etc")
    (tmp_path / "etc" / "cases" / "patient1").mkdir()
    (tmp_path / "etc" / "cases" / "patient1" / "ct.mha").write_bytes(b"x" * 32)

    assert main(["plan", str(job), "--offline", "--json", "--ledger", dsn]) == 0
    plan = capsys.readouterr()
    assert json.loads(plan.out)["ledger"] == re.sub(f":{SHORT}@", ":***@", dsn)
    assert main(["plan", str(job), "--offline", "--dry-run", "--ledger", dsn]) == 0  # the shared plan, not a scratch
    dry = capsys.readouterr()
    assert main(["status", str(job), "--offline", "--json", "--ledger", dsn]) == 0
    status = capsys.readouterr()
    assert json.loads(status.out)["counts"]["case"] == {"planned": 1}
    assert main(["report", str(job), "--format", "json", "--ledger", dsn]) == 0
    report = capsys.readouterr()
    assert [row["title"] for row in json.loads(report.out)] == ["patient1"]
    for captured in (plan, dry, status, report):
        assert SHORT not in captured.out + captured.err
    assert not (tmp_path / "etc" / "job.ledger.sqlite").exists()


def test_the_worker_id_defaults_to_host_and_pid_and_a_flag_beats_the_environment(tmp_path: Path) -> None:
    job = write_job_file(tmp_path)
    default = settings.resolve(job, None, {})
    assert default.worker_id.endswith(f"-{os.getpid()}") and default.sources["worker_id"] == "default"
    assert default.worker_id.startswith(re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname())[:20])
    by_env = settings.resolve(job, None, {"GCBULK_WORKER_ID": "node-2:a"})
    assert (by_env.worker_id, by_env.sources["worker_id"]) == ("node-2:a", "environment GCBULK_WORKER_ID")
    by_flag = settings.resolve(job, flags("--worker-id", "w1"), {"GCBULK_WORKER_ID": "node-2:a"})
    assert (by_flag.worker_id, by_flag.sources["worker_id"]) == ("w1", "flag --worker-id")
    assert by_flag.effective()["worker_id"] == ("w1", "flag --worker-id")


def test_a_long_hostname_still_makes_a_valid_default_worker_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "a" * 70 + ".example.org")
    worker_id = settings.resolve(write_job_file(tmp_path), None, {}).worker_id
    assert len(worker_id) <= 64 and worker_id.endswith(f"-{os.getpid()}")


@pytest.mark.parametrize(
    "bad, why",
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("w" * 65, "is 65 characters long"),
        ("worker 1", "holds a character other than"),
        ("w1/../x", "holds a character other than"),
        ("wörker", "holds a character other than"),
    ],
)
def test_a_bad_worker_id_is_an_error_naming_the_setting_and_what_to_do(tmp_path: Path, bad: str, why: str) -> None:
    job = write_job_file(tmp_path)
    with pytest.raises(ConfigurationError) as by_flag:
        settings.resolve(job, flags("--worker-id", bad), {})
    message = str(by_flag.value)
    assert "--worker-id" in message and "GCBULK_WORKER_ID" in message and why in message
    assert "give each worker of the job its own name of 1 to 64 letters, digits and . _ : -" in message
    with pytest.raises(ConfigurationError, match="^GCBULK_WORKER_ID: "):
        settings.resolve(job, None, {"GCBULK_WORKER_ID": bad})


def test_gcbulk_run_with_a_bad_worker_id_exits_2_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job_file(tmp_path)
    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", "a-test-token-0123")
    assert main(["run", str(job), "--worker-id", "no spaces please"]) == 2
    assert "gcbulk run: the worker id (--worker-id, GCBULK_WORKER_ID) 'no spaces please'" in capsys.readouterr().err


def test_a_password_given_as_a_dsn_parameter_is_not_in_the_ledgers_own_name(pg_database: str) -> None:
    """The ledger's ``path`` (status, the plan report, /readyz) comes from the store itself, not from settings."""
    from gcbulk.state.ledger import Ledger
    from tests.state.conftest import BINDING

    dsn = pg_database + f"?password={SHORT}"  # trust authentication: the password is not checked
    with Ledger.open(dsn, BINDING) as ledger:
        assert SHORT not in str(ledger.path) and "password=***" in str(ledger.path)

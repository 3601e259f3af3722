"""Configuration: flag > environment GCBULK_* > job file > default, and `gcbulk config show` with the token masked."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gcbulk.engine import settings
from gcbulk.engine.cli import main
from gcbulk.engine.gc.errors import ConfigurationError
from tests.container.conftest import write_job_file


def flags(**values: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    namespace = parser.parse_args([])
    for name, value in values.items():
        setattr(namespace, name, value)
    return namespace


def test_a_flag_beats_the_environment_which_beats_the_job_file_which_beats_the_default(tmp_path: Path) -> None:
    job = write_job_file(tmp_path, engine="files_in_flight = 4\nparts_in_flight = 6")
    environ = {"GCBULK_POLL_INTERVAL": "12", "GCBULK_PROGRESS_INTERVAL": "7", "GCBULK_FILES_IN_FLIGHT": "9"}
    resolved = settings.resolve(job, flags(poll_interval="3"), environ)

    assert (resolved.poll_interval, resolved.sources["poll_interval"]) == (3.0, "flag --poll-interval")
    assert (resolved.progress_interval, resolved.sources["progress_interval"]) == (
        7.0,
        "environment GCBULK_PROGRESS_INTERVAL",
    )
    assert (resolved.job.engine.files_in_flight, resolved.sources["engine.files_in_flight"]) == (
        9,
        "environment GCBULK_FILES_IN_FLIGHT",
    )
    assert (resolved.job.engine.parts_in_flight, resolved.sources["engine.parts_in_flight"]) == (6, "job file")
    assert (resolved.job.engine.imports_in_flight, resolved.sources["engine.imports_in_flight"]) == (16, "default")
    assert (resolved.drain, resolved.sources["drain"]) == (30.0, "default")
    assert str(resolved.metrics_address) == settings.DEFAULT_METRICS_ADDRESS


def test_the_adaptive_limits_and_the_image_stagger_are_switches_of_the_job_and_the_environment(tmp_path: Path) -> None:
    job = write_job_file(tmp_path, engine="adaptive_concurrency = false")
    resolved = settings.resolve(job, None, {"GCBULK_STAGGER_IMAGE_VALUES": "off"})
    assert (resolved.job.engine.adaptive_concurrency, resolved.sources["engine.adaptive_concurrency"]) == (
        False,
        "job file",
    )
    assert (resolved.job.engine.stagger_image_values, resolved.sources["engine.stagger_image_values"]) == (
        False,
        "environment GCBULK_STAGGER_IMAGE_VALUES",
    )
    assert settings.resolve(write_job_file(tmp_path / "b"), None, {}).job.engine.adaptive_concurrency is True


def test_the_environment_overrides_server_study_case_root_ca_file_ledger_and_events(tmp_path: Path) -> None:
    job = write_job_file(tmp_path / "job")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "elsewhere").mkdir()
    environ = {
        "GCBULK_BASE_URL": "https://emulator:8443/api/v1",
        "GCBULK_READER_STUDY": "other-study",
        "GCBULK_CASE_ROOT": str(tmp_path / "elsewhere"),
        "GCBULK_CA_FILE": str(ca),
        "GCBULK_LEDGER": str(tmp_path / "state" / "job.ledger.sqlite"),
        "GCBULK_EVENTS": str(tmp_path / "state" / "events.jsonl"),
    }
    resolved = settings.resolve(job, None, environ)

    assert resolved.job.base_url == "https://emulator:8443/api/v1/"  # normalised as the job file's would be
    assert resolved.job.reader_study == "other-study"
    assert resolved.job.case_root == tmp_path / "elsewhere"
    assert resolved.job.ca_file == ca
    assert resolved.job.binding.case_root == str(tmp_path / "elsewhere")  # the ledger is bound to what runs
    assert resolved.ledger == tmp_path / "state" / "job.ledger.sqlite"
    assert resolved.events == tmp_path / "state" / "events.jsonl"
    assert resolved.sources["base_url"] == "environment GCBULK_BASE_URL"


def test_the_event_log_defaults_to_beside_the_ledger(tmp_path: Path) -> None:
    job = write_job_file(tmp_path)
    resolved = settings.resolve(job, None, {"GCBULK_LEDGER": str(tmp_path / "v" / "x.sqlite")})
    assert resolved.events == tmp_path / "v" / "job.events.jsonl"
    assert settings.resolve(job, None, {}).events == tmp_path / "job.events.jsonl"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GCBULK_BASE_URL": "http://gc.example/api/v1/"}, "must start with https://"),
        ({"GCBULK_READER_STUDY": "  "}, "GCBULK_READER_STUDY is empty"),
        ({"GCBULK_CA_FILE": "/nonexistent/ca.pem"}, "GCBULK_CA_FILE: the CA file /nonexistent/ca.pem does not exist"),
        ({"GCBULK_FILES_IN_FLIGHT": "many"}, "GCBULK_FILES_IN_FLIGHT must be a whole number, got 'many'"),
        ({"GCBULK_FILES_IN_FLIGHT": "0"}, "engine.files_in_flight must be a whole number of at least 1"),
        ({"GCBULK_PART_SIZE": "1 MiB"}, "engine.part_size must be between 5 MiB and 5 GiB"),
        ({"GCBULK_POLL_INTERVAL": "-1"}, "GCBULK_POLL_INTERVAL: poll_interval must be a number of seconds above 0"),
        ({"GCBULK_METRICS_ADDRESS": "9464"}, "GCBULK_METRICS_ADDRESS: the metrics address '9464' is not host:port"),
        ({"GCBULK_LOG_LEVEL": "loud"}, "GCBULK_LOG_LEVEL: log_level must be one of DEBUG, INFO, WARNING, ERROR"),
        ({"GCBULK_LOG_FORMAT": "xml"}, "GCBULK_LOG_FORMAT: log_format must be one of auto, json, text"),
        ({"GCBULK_ADAPTIVE_CONCURRENCY": "maybe"}, "GCBULK_ADAPTIVE_CONCURRENCY must be true or false, got 'maybe'"),
    ],
)
def test_a_bad_environment_value_is_an_error_naming_the_variable(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        settings.resolve(write_job_file(tmp_path), None, environ)
    assert message in str(raised.value)


def test_an_empty_ca_file_variable_switches_the_job_files_private_ca_off(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    job = write_job_file(tmp_path, ca_file=ca)
    assert settings.resolve(job, None, {}).job.ca_file == ca
    assert settings.resolve(job, None, {"GCBULK_CA_FILE": ""}).job.ca_file is None


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        (":9000", ("0.0.0.0", 9000)),
        ("[::1]:9464", ("::1", 9464)),
        ("off", None),
        ("", None),
    ],
)
def test_metrics_addresses_are_host_port_or_off(address: str, expected: tuple[str, int] | None) -> None:
    parsed = settings.parse_address(address)
    assert (None if parsed is None else (parsed.host, parsed.port)) == expected


def test_the_token_comes_from_the_flag_then_the_token_file_variable_then_gcapis_variable(tmp_path: Path) -> None:
    job = write_job_file(tmp_path)
    (tmp_path / "flag-token").write_text("token-from-flag\n")
    (tmp_path / "secret").write_text("Bearer token-from-secret-file\n")
    environ = {"GCBULK_TOKEN_FILE": str(tmp_path / "secret"), "GRAND_CHALLENGE_AUTHORIZATION": "token-from-env"}

    by_flag = settings.resolve(job, flags(token_file=tmp_path / "flag-token"), environ)
    assert (by_flag.token, by_flag.token_source) == ("token-from-flag", f"flag --token-file {tmp_path / 'flag-token'}")
    by_file = settings.resolve(job, None, environ)
    assert by_file.token == "Bearer token-from-secret-file"  # the client keeps the last word (docs/gc-api.md §0)
    assert by_file.token_source.startswith("environment GCBULK_TOKEN_FILE")
    by_env = settings.resolve(job, None, {"GRAND_CHALLENGE_AUTHORIZATION": "token-from-env", "GCBULK_TOKEN_FILE": ""})
    assert (by_env.token, by_env.token_source) == ("token-from-env", "environment GRAND_CHALLENGE_AUTHORIZATION")
    assert "token-from" not in repr(by_flag) + repr(by_file) + repr(by_env)


def test_a_missing_or_empty_token_file_is_an_error_saying_what_to_do(tmp_path: Path) -> None:
    job = write_job_file(tmp_path)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty; put your Grand Challenge API token in it"):
        settings.resolve(job, None, {"GCBULK_TOKEN_FILE": str(tmp_path / "empty")})
    with pytest.raises(ConfigurationError, match="cannot be read"):
        settings.resolve(job, None, {"GCBULK_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigurationError, match="GCBULK_TOKEN_FILE .*/run/secrets/gc_token"):
        settings.resolve(job, None, {}).require_token()


def test_config_show_prints_every_value_with_its_source_and_masks_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job_file(tmp_path)
    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", "very-secret-token-123")
    monkeypatch.setenv("GCBULK_READER_STUDY", "from-env")

    assert main(["config", "show", str(job), "--log-level", "debug"]) == 0
    text = capsys.readouterr().out
    assert "very-secret-token-123" not in text
    lines = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert lines["reader_study"].endswith("from-env   [environment GCBULK_READER_STUDY]")
    assert lines["log_level"].endswith("DEBUG   [flag --log-level]")
    assert lines["base_url"].endswith("https://gc.example/api/v1/   [job file]")
    assert lines["token"].endswith(f"{settings.MASK}   [environment GRAND_CHALLENGE_AUTHORIZATION]")

    assert main(["config", "show", str(job), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["token"] == {"value": settings.MASK, "source": "environment GRAND_CHALLENGE_AUTHORIZATION"}
    assert shown["engine.part_size"]["source"] == "default"
    assert shown["metrics_address"] == {"value": settings.DEFAULT_METRICS_ADDRESS, "source": "default"}


def test_config_show_says_when_there_is_no_token_and_exits_2_on_a_bad_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job_file(tmp_path)
    assert main(["config", "show", str(job), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["token"] == {"value": None, "source": "not set"}

    monkeypatch.setenv("GCBULK_PARTS_IN_FLIGHT", "lots")
    assert main(["config", "show", str(job)]) == 2
    assert "gcbulk config: GCBULK_PARTS_IN_FLIGHT must be a whole number, got 'lots'" in capsys.readouterr().err


def test_every_command_on_a_jobs_ledger_finds_it_through_gcbulk_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job_file(tmp_path / "etc")
    (tmp_path / "etc" / "cases" / "patient1").mkdir()
    (tmp_path / "etc" / "cases" / "patient1" / "ct.mha").write_bytes(b"x" * 32)
    ledger = tmp_path / "volume" / "job.ledger.sqlite"
    ledger.parent.mkdir()
    monkeypatch.setenv("GCBULK_LEDGER", str(ledger))

    assert main(["plan", str(job), "--offline"]) == 0
    assert ledger.exists() and not (tmp_path / "etc" / "job.ledger.sqlite").exists()
    capsys.readouterr()
    assert main(["status", str(job), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["ledger"] == str(ledger) and status["counts"]["case"] == {"planned": 1}
    assert main(["report", str(job), "--format", "json"]) == 0
    assert [row["title"] for row in json.loads(capsys.readouterr().out)] == ["patient1"]
    assert main(["retry-failed", str(job), "--no-run"]) == 0
    assert "0 failed case(s) queued again" in capsys.readouterr().err

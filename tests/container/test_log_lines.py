"""Logs: JSON lines in one schema when stdout is not a terminal, plain text on request, and never the token."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gcbulk.engine.gc.errors import TransportError
from gcbulk.engine.service import logs
from gcbulk.engine.upload.progress import TransferStats

TOKEN = "s3cr3t-knox-token-0123456789abcdef"


@pytest.fixture
def stdout() -> Iterator[io.StringIO]:
    stream = io.StringIO()  # not a terminal: "auto" means JSON lines
    setup = logs.configure("INFO", "auto", stream=stream, secrets=[TOKEN])
    try:
        yield stream
    finally:
        setup.close()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_events_log_messages_and_summaries_share_one_json_schema(stdout: io.StringIO) -> None:
    logs.log_event("case_done", case="patient001", key=[3])
    logs.log_event("case_failed", case="patient002", reason="airway-segmentation: could not be imported")
    logging.getLogger("gcbulk").warning("drain time of %d s is over", 30)
    stats = TransferStats()
    stats.bytes_total = 4096
    stats.add_bytes(1024)
    logs.log_summary(stats.snapshot(), {"done": 1, "failed": 1, "planned": 3})

    done, failed, message, summary = lines(stdout)
    for line in (done, failed, message, summary):
        assert {"at", "level", "event"} <= set(line) and line["at"].endswith("Z")
    assert done == {"at": done["at"], "level": "info", "event": "case_done", "case": "patient001", "key": [3]}
    assert (failed["level"], failed["reason"]) == ("warning", "airway-segmentation: could not be imported")
    assert message["event"] == "log" and message["message"] == "drain time of 30 s is over"
    assert summary["event"] == "summary" and summary["cases"] == {"done": 1, "failed": 1, "planned": 3}
    assert (summary["cases_total"], summary["bytes"], summary["bytes_total"]) == (5, 1024, 4096)
    assert {"rate", "eta_seconds", "retries"} <= set(summary)


def test_the_event_file_and_stdout_carry_the_same_event(tmp_path: Path, stdout: io.StringIO) -> None:
    events = logs.ConsoleEventLog(tmp_path / "events.jsonl")
    events.emit("case_done", case="patient001", key=[1])
    events.close()
    in_file = json.loads((tmp_path / "events.jsonl").read_text())
    on_stdout = lines(stdout)[0]
    assert {k: v for k, v in on_stdout.items() if k not in ("at", "level")} == {
        k: v for k, v in in_file.items() if k != "at"
    }


def test_steps_below_a_case_are_debug_and_hidden_at_info(stdout: io.StringIO) -> None:
    logs.log_event("part_sent", case="patient001", key=[1, 1])
    logs.log_event("item_uploaded", case="patient001", key=[1])
    logs.log_event("case_started", case="patient001")
    assert [line["event"] for line in lines(stdout)] == ["case_started"]


def test_the_level_comes_from_the_setting(tmp_path: Path) -> None:
    stream = io.StringIO()
    setup = logs.configure("WARNING", "json", stream=stream)
    try:
        logs.log_event("case_done", case="p")
        logs.log_event("case_failed", case="p", reason="r")
    finally:
        setup.close()
    assert [line["event"] for line in lines(stream)] == ["case_failed"]


def test_text_format_is_one_readable_line_per_event() -> None:
    stream = io.StringIO()
    setup = logs.configure("INFO", "text", stream=stream)
    try:
        logs.log_event("case_done", case="patient001", key=[3])
    finally:
        setup.close()
    assert stream.getvalue().rstrip().endswith("INFO    case_done case=patient001 key=[3]")


def test_the_token_never_appears_in_messages_fields_or_tracebacks(stdout: io.StringIO) -> None:
    log = logging.getLogger("gcbulk.engine.gc.client")
    log.warning("request headers: {'Authorization': 'Bearer %s'}", TOKEN)
    logs.log_event("case_failed", case="p1", reason=f"server echoed {TOKEN}", detail={"nested": [TOKEN]})
    try:
        raise TransportError("GET", "https://gc.example/api/v1/uploads/", ConnectionError(f"token={TOKEN}"))
    except TransportError:
        logging.getLogger("gcbulk").exception("upload failed")
    logging.getLogger("gcbulk").error("someone else's header: Bearer abcdef123456")

    text = stdout.getvalue()
    assert TOKEN not in text and "abcdef123456" not in text
    warning, failed, exception, other = lines(stdout)
    assert warning["message"] == "request headers: {'Authorization': 'Bearer [REDACTED]'}"
    assert failed["reason"] == "server echoed [REDACTED]" and failed["detail"] == {"nested": ["[REDACTED]"]}
    assert "token=[REDACTED]" in exception["error"] and "Traceback" in exception["error"]
    assert other["message"] == "someone else's header: Bearer [REDACTED]"


def test_the_redactor_also_knows_the_bare_token_of_a_bearer_value() -> None:
    redactor = logs.SecretRedactor(["Bearer " + TOKEN])
    assert redactor.redact(f"x {TOKEN} y") == "x [REDACTED] y"
    assert redactor.redact(("a", TOKEN)) == ["a", "[REDACTED]"]
    assert redactor.redact(12) == 12

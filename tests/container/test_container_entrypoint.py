"""The container's entrypoint, `gcbulk run --follow /etc/gcbulk/job.toml`, run as a subprocess with the environment
docker-compose.yml gives it (paths and addresses mapped to this machine) against an emulator the test starts."""

from __future__ import annotations

import json
import shutil
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from gcbulk.emulator.context import EmulatorConfig
from gcbulk.emulator.server import RunningEmulator, emulator_in_thread, free_port
from tests.container.conftest import REPO, compose_environment
from tests.container.gcbulk_process import (
    GcbulkProcess,
    gcbulk_environment,
    http_get,
    poll,
)
from tests.imaging import make_mask, make_mha

DEMO_JOB = REPO / "docker" / "demo-job.toml"
CASE_SECONDS = 90.0  # generous: the suite shares two cores


def add_case(case_root: Path, n: int) -> None:
    folder = case_root / f"patient{n:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    make_mha(folder / "1-ct.mha", (4, 8, 8), seed=n)
    make_mask(folder / "2-airway.mha", (4, 8, 8), seed=n + 100)


def container_environment(tmp_path: Path, emulator: RunningEmulator | None, **extra: str) -> dict[str, str]:
    """docker-compose.yml's gcbulk environment, with its container paths and host names mapped to this machine."""
    env = compose_environment("gcbulk")
    env.update(
        {
            "GCBULK_CASE_ROOT": str(tmp_path / "data" / "cases"),
            "GCBULK_LEDGER": str(tmp_path / "var" / "job.ledger.sqlite"),
            "GCBULK_EVENTS": str(tmp_path / "var" / "job.events.jsonl"),
            "GCBULK_METRICS_ADDRESS": "127.0.0.1:0",  # a free port: tests run side by side
            "GCBULK_POLL_INTERVAL": "0.3",
            "GCBULK_PROGRESS_INTERVAL": "0.5",
        }
    )
    if emulator is not None:
        env["GCBULK_BASE_URL"] = emulator.base_url
        env["GCBULK_CA_FILE"] = str(emulator.ca_file)
    env.update(extra)
    return gcbulk_environment(env)


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Path]:
    """The container's file system: the job at etc/job.toml, the case tree, the state volume."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "var").mkdir()
    shutil.copy(DEMO_JOB, tmp_path / "etc" / "job.toml")
    for n in (1, 2):
        add_case(tmp_path / "data" / "cases", n)
    yield tmp_path / "etc" / "job.toml"


def start(job: Path, env: dict[str, str]) -> GcbulkProcess:
    return GcbulkProcess(["run", "--follow", str(job)], env)


def admin_counters(emulator: RunningEmulator) -> dict:
    status, body = http_get(
        emulator.admin_url + "counters", context=ssl.create_default_context(cafile=str(emulator.ca_file))
    )
    assert status == 200
    return json.loads(body)


def test_follow_mode_serves_metrics_picks_up_new_cases_drains_on_sigterm_and_resumes_without_resending(
    container: Path, tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    env = container_environment(tmp_path, threaded_emulator)
    gcbulk = start(container, env)
    try:
        poll(lambda: gcbulk.cases("done") == 2, timeout=CASE_SECONDS, what="2 cases done in /metrics")
        metrics = gcbulk.metrics()
        assert metrics[("gcbulk_bytes_sent_total", ())] > 0
        assert metrics[("gcbulk_pass_bytes_done", ())] == metrics[("gcbulk_pass_bytes_total", ())] > 0
        assert metrics[("gcbulk_items", (("state", "done"),))] == 4
        assert metrics[("gcbulk_ledger_read_ok", ())] == 1
        api_requests = sum(
            v
            for (name, labels), v in metrics.items()
            if name == "gcbulk_http_request_duration_seconds_count" and ("target", "api") in labels
        )
        assert api_requests > 0
        status, body = gcbulk.get("/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, body = gcbulk.get("/readyz")
        assert status == 200 and json.loads(body)["ready"] is True

        add_case(tmp_path / "data" / "cases", 3)  # a folder that appears while the container runs
        poll(lambda: gcbulk.cases("done") == 3, timeout=CASE_SECONDS, what="the new case done")
        summary = gcbulk.wait_for_event("summary")
        assert summary["level"] == "info" and "cases" in summary and "rate" in summary
        assert gcbulk.events("case_done") and all("at" in line for line in gcbulk.lines)
        assert env["GRAND_CHALLENGE_AUTHORIZATION"] not in "".join(gcbulk.raw)  # the token is never logged
    finally:
        code = gcbulk.stop(signal.SIGTERM) if gcbulk.process.poll() is None else gcbulk.process.returncode
    assert code == 0, "".join(gcbulk.stderr[-20:])
    assert gcbulk.events("stop_requested")

    sent_before = admin_counters(threaded_emulator)
    assert sent_before["part_puts"] and all(
        count == 1 for parts in sent_before["part_puts"].values() for count in parts.values()
    )
    again = start(container, env)
    try:
        again.wait_for_event("plan")
        poll(
            lambda: json.loads(again.get("/healthz")[1])["phase"] == "idle",
            timeout=CASE_SECONDS,
            what="the restarted run to finish its first round",
        )
        assert again.cases("done") == 3
    finally:
        code = again.stop(signal.SIGTERM)
    assert code == 0
    sent_after = admin_counters(threaded_emulator)
    assert sent_after["part_puts"] == sent_before["part_puts"]  # nothing re-sent
    assert sent_after["requests"].get("POST api:/api/v1/uploads/") == sent_before["requests"].get(
        "POST api:/api/v1/uploads/"
    )
    titles = [ds.title for ds in threaded_emulator.context.store.display_sets.values()]
    assert sorted(titles) == ["patient001", "patient002", "patient003"]  # exactly one display set per case


def test_follow_mode_waits_out_an_unreachable_server_and_then_uploads(container: Path, tmp_path: Path) -> None:
    port = free_port()
    env = container_environment(
        tmp_path,
        None,
        GCBULK_BASE_URL=f"http://127.0.0.1:{port}/api/v1/",
        GCBULK_CA_FILE="",
        GCBULK_ATTEMPTS_PER_ITEM="1",
    )
    gcbulk = start(container, env)
    try:
        fault = gcbulk.wait_for_event("transient_fault")
        assert fault["level"] == "warning" and fault["retry_in_seconds"] > 0
        assert gcbulk.get("/healthz")[0] == 200  # alive: a container runtime must not restart it
        status, body = gcbulk.get("/readyz")
        assert status == 503 and json.loads(body)["checks"]["grand_challenge"]["ok"] is False
        config = EmulatorConfig(data_dir=tmp_path / "late-emulator", import_delay_seconds=0.05)
        with emulator_in_thread(config, port=port, tls=False):
            poll(lambda: gcbulk.cases("done") == 2, timeout=CASE_SECONDS, what="the cases done once the server is up")
            assert gcbulk.process.poll() is None
            code = gcbulk.stop(signal.SIGTERM)
    finally:
        gcbulk.kill()
    assert code == 0


def test_follow_mode_rides_out_a_503_storm(container: Path, tmp_path: Path, threaded_emulator: RunningEmulator) -> None:
    faults = threaded_emulator.context.faults
    from gcbulk.emulator.faults import FaultRule

    faults.replace([FaultRule(match="* api", status=503)])
    env = container_environment(tmp_path, threaded_emulator, GCBULK_ATTEMPTS_PER_ITEM="1")
    gcbulk = start(container, env)
    try:
        gcbulk.wait_for_event("transient_fault")
        assert gcbulk.process.poll() is None
        faults.replace([])
        poll(lambda: gcbulk.cases("done") == 2, timeout=CASE_SECONDS, what="the cases done after the storm")
        retries = {labels: v for (name, labels), v in gcbulk.metrics().items() if name == "gcbulk_retries_total"}
        assert retries.get((("reason", "http_503"),), 0) >= 1
    finally:
        code = gcbulk.stop(signal.SIGTERM) if gcbulk.process.poll() is None else gcbulk.process.returncode
    assert code == 0


def test_a_refused_token_is_a_fatal_configuration_error_exit_2(
    container: Path, tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    env = container_environment(tmp_path, threaded_emulator, GRAND_CHALLENGE_AUTHORIZATION="not-a-known-token")
    gcbulk = start(container, env)
    try:
        code = gcbulk.process.wait(timeout=CASE_SECONDS)
    finally:
        gcbulk.kill()
    assert code == 2
    error = gcbulk.wait_for_event("fatal_configuration_error")
    assert "401" in error["error"] and "not-a-known-token" not in "".join(gcbulk.raw)


def test_a_bad_setting_in_the_environment_exits_2_before_starting(container: Path, tmp_path: Path) -> None:
    env = container_environment(tmp_path, None, GCBULK_CA_FILE="", GCBULK_FILES_IN_FLIGHT="lots")
    gcbulk = start(container, env)
    code = gcbulk.process.wait(timeout=60)
    assert code == 2
    poll(
        lambda: any("GCBULK_FILES_IN_FLIGHT must be a whole number" in line for line in gcbulk.stderr),
        timeout=10,
        what="the error on stderr",
    )

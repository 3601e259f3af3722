"""/metrics, /healthz and /readyz served on the run's event loop, reading the ledger and the stats snapshot."""

from __future__ import annotations

import base64
import hashlib
import ssl
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.errors import ApiError, TransportError, UploadCapReached
from gcbulk.engine.jobfile import JobConfig, load_job
from gcbulk.engine.plan.planner import PlannedCase, plan_tree
from gcbulk.engine.service.health import MonitoringServer, ServerCheck
from gcbulk.engine.service.metrics import Metrics, RunState, retry_reason
from gcbulk.engine.settings import Address
from gcbulk.engine.upload.journal import LedgerRunner
from gcbulk.state.ledger import Ledger, default_ledger_path
from gcbulk.state.replan import planning
from tests.container.conftest import write_job_file


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def plan_three_cases(tmp_path: Path) -> JobConfig:
    job_file = write_job_file(tmp_path)
    for n in (1, 2, 3):
        folder = tmp_path / "cases" / f"patient{n}"
        folder.mkdir(parents=True)
        (folder / "ct.mha").write_bytes(b"c" * 64)
        (folder / "seg.mha").write_bytes(b"s" * 32)
    job = load_job(job_file)
    with Ledger.open(default_ledger_path(job.job_file), job.binding, job_file=job.job_file) as ledger:
        with planning(ledger, rules=job.rules_dict(), job_file=job.job_file) as plan:
            for entry in plan_tree(job):
                if isinstance(entry, PlannedCase):
                    plan.add(entry)
            plan.finish()
    return job


class ReadOnlyRunner(LedgerRunner):
    """The ledger runner with the ledger opened read-only, as a run would find a ledger it cannot write."""

    async def __aenter__(self) -> ReadOnlyRunner:
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._ledger = await self._submit(Ledger.open_readonly, self.path)
        return self


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[LedgerRunner]:
    job = plan_three_cases(tmp_path)
    async with LedgerRunner(default_ledger_path(job.job_file), job.binding) as running:
        yield running


@pytest.fixture
async def served(runner: LedgerRunner) -> AsyncIterator[tuple[str, RunState, Metrics, list[int]]]:
    state = RunState(runner=runner, reader_study="example-study", base_url="https://gc.example/api/v1/")
    probes: list[int] = []

    async def probe() -> None:
        probes.append(1)

    metrics = Metrics(state)
    server = MonitoringServer(metrics, state, Address("127.0.0.1", 0), ServerCheck(probe, cache_seconds=3600))
    address = await server.start()
    try:
        yield f"http://127.0.0.1:{address.port}", state, metrics, probes
    finally:
        await server.stop()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_metrics_show_cases_by_state_from_the_ledger_and_bytes_rate_eta_from_the_snapshot(served) -> None:
    url, state, _, _ = served
    first = await state.runner.run(state.runner.ledger.case_id_by_title, "patient1")
    await state.runner.run(state.runner.ledger.case_started, first)
    await state.runner.run(state.runner.ledger.case_done, first)
    stats = state.new_stats()
    stats.bytes_total = 1000
    stats.add_bytes(250)
    state.stats, state.phase = stats, "running"

    status, text = await get(url + "/metrics")
    values = samples(text)
    assert status == 200
    assert values[("gcbulk_cases", (("state", "done"),))] == 1
    assert values[("gcbulk_cases", (("state", "planned"),))] == 2
    assert values[("gcbulk_items", (("state", "planned"),))] == 6
    assert values[("gcbulk_pass_bytes_done", ())] == 250 and values[("gcbulk_pass_bytes_total", ())] == 1000
    assert values[("gcbulk_bytes_sent_total", ())] == 0  # no pass is running: nothing this process sent
    assert values[("gcbulk_eta_seconds", ())] > 0
    assert values[("gcbulk_phase", (("phase", "running"),))] == 1
    assert values[("gcbulk_phase", (("phase", "idle"),))] == 0
    assert values[("gcbulk_ledger_read_ok", ())] == 1
    assert values[("gcbulk_uploads_in_flight", ())] == 0 and values[("gcbulk_parts_in_flight", ())] == 0
    assert (
        values[
            (
                "gcbulk_info",
                (
                    ("base_url", "https://gc.example/api/v1/"),
                    ("reader_study", "example-study"),
                    ("version", "0.1.0"),
                    ("worker", state.worker_id),
                ),
            )
        ]
        == 1
    )

    state.pass_finished()  # the pass's bytes now count for the process, and keep counting in the next pass
    state.stats = state.new_stats()
    assert samples((await get(url + "/metrics"))[1])[("gcbulk_bytes_sent_total", ())] == 250


async def test_retries_are_counted_by_reason_and_survive_the_next_pass(served) -> None:
    url, state, _, _ = served
    first = state.new_stats()
    state.stats = first
    first.count_retry("GET /x", TransportError("GET", "https://gc.example/", ConnectionResetError()), 0.1)
    first.count_retry("POST uploads/", UploadCapReached("POST", "u", 400, {}), 300.0)
    first.count_retry("GET /x", ApiError("GET", "u", 429, {}), 1.0)
    first.count_retry("GET /x", ApiError("GET", "u", 503, {}), 1.0)
    state.stats = second = state.new_stats()
    second.count_retry("GET /x", ApiError("GET", "u", 503, {}), 1.0)

    values = samples((await get(url + "/metrics"))[1])
    assert values[("gcbulk_retries_total", (("reason", "network"),))] == 1
    assert values[("gcbulk_retries_total", (("reason", "upload_cap"),))] == 1
    assert values[("gcbulk_retries_total", (("reason", "throttled"),))] == 1
    assert values[("gcbulk_retries_total", (("reason", "http_503"),))] == 2
    assert second.snapshot().retries == 1  # the engine's own count is untouched


def test_retry_reasons_are_a_small_fixed_vocabulary() -> None:
    assert retry_reason(None) == "unknown"
    assert retry_reason(TimeoutError()) == "network"
    assert retry_reason(ValueError("x")) == "value_error"


async def test_healthz_answers_while_the_loop_runs_and_readyz_checks_ledger_and_server(served) -> None:
    url, state, _, probes = served
    status, body = await get(url + "/healthz")
    assert status == 200 and '"status": "ok"' in body

    status, body = await get(url + "/readyz")
    assert status == 200 and '"ready": true' in body
    await get(url + "/readyz")
    assert len(probes) == 1  # cached: probes do not load Grand Challenge

    async with ReadOnlyRunner(state.runner.path, state.runner.binding) as read_only:
        state.runner = read_only
        status, body = await get(url + "/readyz")
    assert status == 503 and "opened read-only" in body


async def test_metrics_and_readyz_answer_before_the_ledger_is_open(tmp_path: Path) -> None:
    state = RunState(phase="starting")

    async def reachable() -> None:
        return None

    server = MonitoringServer(Metrics(state), state, Address("127.0.0.1", 0), ServerCheck(reachable))
    address = await server.start()
    try:
        status, text = await get(f"http://127.0.0.1:{address.port}/metrics")
        assert status == 200 and samples(text)[("gcbulk_ledger_read_ok", ())] == 0
        status, body = await get(f"http://127.0.0.1:{address.port}/readyz")
        assert status == 503 and "not open yet (starting)" in body
    finally:
        await server.stop()


async def test_readyz_is_503_with_the_reason_when_grand_challenge_cannot_be_reached(runner: LedgerRunner) -> None:
    state = RunState(runner=runner)

    async def unreachable() -> None:
        raise aiohttp.ClientConnectionError("Cannot connect to host gc.example:443")

    server = MonitoringServer(Metrics(state), state, Address("127.0.0.1", 0), ServerCheck(unreachable))
    address = await server.start()
    try:
        status, body = await get(f"http://127.0.0.1:{address.port}/readyz")
    finally:
        await server.stop()
    assert status == 503 and "Cannot connect to host gc.example:443" in body


async def test_http_latency_is_measured_through_aiohttps_trace_hooks(emulator: RunningEmulator) -> None:
    state = RunState(base_url=emulator.base_url)
    metrics = Metrics(state)
    context = ssl.create_default_context(cafile=str(emulator.ca_file))
    async with aiohttp.ClientSession(trace_configs=[metrics.trace_config()]) as session:
        for path in ("gcapi/", "uploads/3f1e1a8e-0000-4000-8000-000000000001/"):
            async with session.get(emulator.base_url + path, ssl=context) as response:
                await response.read()
        async with session.put(
            emulator.s3_url + "/uploads/some-key?X-Amz-Signature=abc", ssl=context, data=b"x"
        ) as response:
            await response.read()

    values = samples(metrics.exposition().decode())
    assert (
        values[
            (
                "gcbulk_http_request_duration_seconds_count",
                (("endpoint", "gcapi/"), ("method", "GET"), ("outcome", "2xx"), ("target", "api")),
            )
        ]
        == 1
    )
    assert (
        values[
            (
                "gcbulk_http_request_duration_seconds_count",
                (("endpoint", "uploads/{id}/"), ("method", "GET"), ("outcome", "4xx"), ("target", "api")),
            )
        ]
        == 1
    )
    assert (
        values[
            (
                "gcbulk_http_request_duration_seconds_count",
                (("endpoint", "part"), ("method", "PUT"), ("outcome", "4xx"), ("target", "s3")),
            )
        ]
        == 1
    )


def _real_looking_s3_upload_id(n: int) -> str:
    # S3 multipart upload ids as AWS issues them: "2~" and ~64 base64url-like characters, dots, dashes, underscores.
    body = base64.urlsafe_b64encode(hashlib.sha256(str(n).encode()).digest() * 2).decode().rstrip("=")
    return f"2~{body[:20]}_{body[20:40]}.{body[40:60]}-{body[60:]}"


def test_a_thousand_uploads_with_real_s3_upload_ids_add_no_metric_series() -> None:
    base = "https://gc.example/api/v1/"
    metrics = Metrics(RunState(base_url=base))

    def observe(method: str, url: str) -> None:
        metrics._observe(SimpleNamespace(started=0.0), method, url, "2xx")

    def series() -> int:
        return sum(
            1
            for s in text_string_to_metric_families(metrics.exposition().decode())
            for sample in s.samples
            if sample.name == "gcbulk_http_request_duration_seconds_count"
        )

    def one_upload(n: int) -> None:
        pk, s3_id = str(uuid.UUID(int=n + 1)), _real_looking_s3_upload_id(n)
        observe("POST", f"{base}uploads/")
        observe("PATCH", f"{base}uploads/{pk}/{s3_id}/generate-presigned-urls/")
        observe("PUT", f"https://bucket.s3.example/uploads/7/{pk}?uploadId={s3_id}&partNumber=1")
        observe("GET", f"{base}uploads/{pk}/{s3_id}/list-parts/")
        observe("PATCH", f"{base}uploads/{pk}/{s3_id}/complete-multipart-upload/")
        observe("GET", f"{base}cases/upload-sessions/{pk}/")
        observe("GET", f"{base}reader-studies/display-sets/{pk}/")

    one_upload(0)
    after_one = series()
    for n in range(1, 1000):
        one_upload(n)
    assert series() == after_one == 7
    text = metrics.exposition().decode()
    assert "2~" not in text and "uploads/{id}/{s3_upload_id}/complete-multipart-upload/" in text


def test_unknown_paths_are_labelled_other_and_file_downloads_media() -> None:
    metrics = Metrics(RunState(base_url="https://gc.example/api/v1/"))
    assert metrics.endpoint_of("https://gc.example/api/v1/secret-probe/abc/def/") == ("api", "other")
    assert metrics.endpoint_of("https://gc.example/media/images/ab/cd/x/file.mha") == ("api", "media")
    assert metrics.endpoint_of("https://gc.example/api/v1/reader-studies/answers/mine/") == (
        "api",
        "reader-studies/answers/mine/",
    )
    assert metrics.endpoint_of("https://gc.example/api/v1/components/interfaces/12/") == (
        "api",
        "components/interfaces/{id}/",
    )


async def test_metrics_of_any_worker_show_every_live_worker_of_the_job(served) -> None:
    url, state, _, _ = served
    for worker in ("host-a-1", "host-b-7"):
        await state.runner.run(state.runner.ledger.register_worker, worker, host=worker[:6], pid=1)
    await state.runner.run(state.runner.ledger.claim_case, "host-b-7", lease_seconds=30.0)
    await state.runner.run(state.runner.ledger.worker_stopped, "host-a-1")

    values = samples((await get(url + "/metrics"))[1])
    assert values[("gcbulk_workers", (("status", "live"),))] == 1
    assert values[("gcbulk_workers", (("status", "stopped"),))] == 1
    assert values[("gcbulk_worker_cases_leased", (("worker", "host-b-7"),))] == 1
    assert ("gcbulk_worker_cases_leased", (("worker", "host-a-1"),)) not in values, "only live workers have series"

"""`/status`: the migration report, live, on the follow-mode server beside /metrics — refreshing itself and saying
what the run waits for now."""

from __future__ import annotations

import json
import logging
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import anyio
import pytest

import gcbulk.engine.upload.shared_limits as shared_limits
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.pacer import AdaptiveLimiter, AimdPolicy
from gcbulk.engine.jobfile import load_job
from gcbulk.engine.plan.titles import redacted
from gcbulk.engine.service.health import MonitoringServer, ServerCheck
from gcbulk.engine.service.metrics import Metrics, RunState
from gcbulk.engine.service.status_page import StatusPage
from gcbulk.engine.service.waits import CATEGORY_TEXT, WAITS_LOGGER, WaitRecorder
from gcbulk.engine.settings import Address
from gcbulk.engine.upload.journal import LedgerRunner
from gcbulk.engine.upload.progress import EventLog
from tests.container.gcbulk_process import poll
from tests.container.migration_history import History, write_history
from tests.container.test_container_entrypoint import DEMO_JOB, add_case, container_environment, start

CASE_SECONDS = 90.0  # generous: the suite shares two cores


@pytest.fixture
def history(tmp_path: Path) -> History:
    return write_history(tmp_path / "job", cut_short=False)  # the live run appends to it


@pytest.fixture
async def live(history: History) -> AsyncIterator[tuple[str, RunState]]:
    """The monitoring server of a run on ``history``'s ledger, with its /status page, on a free loopback port."""
    async with LedgerRunner(history.ledger, load_job(history.job_file).binding) as runner:
        state = RunState(runner=runner, reader_study="example-study", worker_id="host-303", phase="running")
        state.waits = WaitRecorder(EventLog(history.events)).install()
        page = StatusPage(state, ledger_path=history.ledger, events_path=history.events, redact=False)

        async def reachable() -> None:
            return None

        server = MonitoringServer(
            Metrics(state), state, Address("127.0.0.1", 0), ServerCheck(reachable), status_page=page
        )
        address = await server.start()
        try:
            yield f"http://127.0.0.1:{address.port}", state
        finally:
            await server.stop()
            state.waits.close()


async def get(url: str) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
    with anyio.fail_after(60):
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text(), response.headers


async def test_status_shows_the_report_live_and_refreshes_itself(live) -> None:
    url, _ = live
    status, page, headers = await get(url + "/status")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-store"
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "2 of 5 cases are on Grand Challenge (40.0 %)" in page  # the same picture as the report file
    assert 'Now <span class="phase">running</span>' in page
    assert "nothing: the server is not holding this run back" in page
    assert "Worker host-303" in page


async def test_status_names_the_waits_of_now_and_the_event_file_keeps_them(live, history: History) -> None:
    url, state = live
    state.count_retry_reason("upload_quota")  # the engine's retry hook, as a quota 403 arrives
    record = logging.LogRecord(WAITS_LOGGER, logging.INFO, shared_limits.__file__, 1, "a case waits", (), None)
    logging.getLogger(WAITS_LOGGER).handle(record)  # as engine/upload/shared_limits.py announces a shared cap
    _, page, _ = await get(url + "/status")
    waiting = page.split("<h3>Waiting for</h3>")[1].split("</ul>")[0]
    assert "upload quota exhausted" in waiting
    assert "cap held by this job&#x27;s other workers" in waiting
    lines = [json.loads(line) for line in history.events.read_text().splitlines()[-2:]]
    assert [(line["event"], line["category"]) for line in lines] == [
        ("server_wait", "quota_exhausted"),
        ("server_wait", "cap_held_by_others"),
    ]


async def test_status_says_the_server_is_slow_when_the_pacer_holds_calls_back(live) -> None:
    url, state = live
    limiter = AdaptiveLimiter(AimdPolicy(initial=3, minimum=1, maximum=16))
    state.engine = SimpleNamespace(client=SimpleNamespace(api_limiter=limiter))  # the holders the page reads
    release = anyio.Event()

    async def hold() -> None:
        async with limiter.slot("GET display-sets"):
            await release.wait()

    async with anyio.create_task_group() as tasks:
        for _ in range(4):  # three calls in flight under the limit of 3, the fourth queued behind them
            tasks.start_soon(hold)
        with anyio.fail_after(10):
            await anyio.wait_all_tasks_blocked()
        assert (limiter.in_flight, limiter.waiting) == (3, 1)
        _, page, _ = await get(url + "/status")
        release.set()
    assert "server slow: limit 3 in flight (1 API calls queued)" in page


async def test_status_before_the_ledger_exists_says_what_it_waits_for(tmp_path: Path) -> None:
    state = RunState(phase="planning")
    page = StatusPage(state, ledger_path=tmp_path / "none.sqlite", events_path=None, redact=False)
    server = MonitoringServer(Metrics(state), state, Address("127.0.0.1", 0), ServerCheck(None), status_page=page)
    address = await server.start()
    try:
        status, text, _ = await get(f"http://127.0.0.1:{address.port}/status")
    finally:
        await server.stop()
    assert status == 503
    assert "gcbulk is planning" in text and "no ledger at" in text and "tries again every 10 s" in text


def test_the_follow_mode_server_serves_status_beside_metrics(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "var").mkdir()
    shutil.copy(DEMO_JOB, tmp_path / "etc" / "job.toml")
    for n in (1, 2):
        add_case(tmp_path / "data" / "cases", n)
    gcbulk = start(tmp_path / "etc" / "job.toml", container_environment(tmp_path, threaded_emulator))
    try:
        poll(lambda: gcbulk.cases("done") == 2, timeout=CASE_SECONDS, what="2 cases done in /metrics")

        def both_done() -> str | None:
            status, text = gcbulk.get("/status")
            return text if status == 200 and "2 of 2 cases" in text else None

        page = poll(both_done, timeout=CASE_SECONDS, what="/status to show both cases done")
    finally:
        code = gcbulk.stop(signal.SIGTERM)
    assert code == 0, "".join(gcbulk.stderr[-20:])
    assert "Complete: 2 of 2 cases are on Grand Challenge" in page
    assert 'http-equiv="refresh"' in page and "Now <span" in page


@pytest.mark.parametrize(
    ("source", "name", "category"),
    [
        ("retry", "throttled", "throttled"),
        ("retry", "upload_cap", "upload_cap"),
        ("retry", "upload_quota", "quota_exhausted"),
        ("retry", "network", None),  # not the server holding the run back
        ("retry", "http_503", None),
        ("announced", "shared_limits", "cap_held_by_others"),
        ("announced", "server_limits", "server_limit"),
        ("announced", "leases", "cases_leased_elsewhere"),
        ("announced", "import_wait", "import_slow"),
        ("announced", "targeted_sessions", "import_slow"),
        ("announced", "retry", None),  # a long retry is counted by its retry, once
    ],
)
def test_which_waits_are_the_servers_and_what_they_are_called(
    tmp_path: Path, source: str, name: str, category: str | None
) -> None:
    events = EventLog(tmp_path / "events.jsonl")
    recorder = WaitRecorder(events)
    if source == "retry":
        recorder.retry(name)
    else:
        recorder.emit(logging.LogRecord(WAITS_LOGGER, logging.INFO, f"/x/{name}.py", 1, "waits", (), None))
    events.close()
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line["category"] for line in lines] == ([category] if category else [])
    assert recorder.current() == ([CATEGORY_TEXT[category]] if category else [])


async def test_status_with_redacted_titles_shows_hashes(history: History) -> None:
    state = RunState(phase="running")
    page = StatusPage(state, ledger_path=history.ledger, events_path=history.events, redact=True)
    server = MonitoringServer(Metrics(state), state, Address("127.0.0.1", 0), ServerCheck(None), status_page=page)
    address = await server.start()
    try:
        status, text, _ = await get(f"http://127.0.0.1:{address.port}/status")
    finally:
        await server.stop()
    assert status == 200
    assert "patient3" not in text and redacted("patient3") in text

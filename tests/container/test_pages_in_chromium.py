"""The migration report and the live /status page in a real browser: Debian's chromium, headless, opens each page,
shows no console message (the pages have no script, so any is an error: a blocked resource, a parse failure), and
leaves a screenshot in the test's temp dir."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from gcbulk.engine.cli import main
from gcbulk.engine.jobfile import load_job
from gcbulk.engine.service.health import MonitoringServer, ServerCheck
from gcbulk.engine.service.metrics import Metrics, RunState
from gcbulk.engine.service.status_page import StatusPage
from gcbulk.engine.settings import Address
from gcbulk.engine.upload.journal import LedgerRunner
from tests.container.migration_history import History, write_history

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it when it can)",
    ),
]
BROWSER_SECONDS = 120  # a cold chromium start on two busy cores
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def open_in_chromium(url: str, work: Path, *, screenshot: Path | None = None, dump_dom: bool = False) -> str:
    """Runs headless chromium on ``url``; returns its stdout (the DOM, with ``dump_dom``). Fails on any console
    message, quoting it."""
    assert CHROMIUM is not None
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={work / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--hide-scrollbars",
        "--window-size=1100,2400",
    ]
    argv += ["--dump-dom"] if dump_dom else [f"--screenshot={screenshot}"]
    with anyio.fail_after(BROWSER_SECONDS):
        done = await anyio.run_process([*argv, url], check=False)
    stderr = done.stderr.decode(errors="replace")
    console = [line for line in stderr.splitlines() if ":CONSOLE" in line]
    assert not console, f"console messages on {url}:\n" + "\n".join(console)
    assert done.returncode == 0, stderr[-2000:]
    return done.stdout.decode(errors="replace")


def assert_screenshot(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000  # a drawn page, not an empty canvas


@pytest.fixture
def history(tmp_path: Path) -> History:
    return write_history(tmp_path / "job", cut_short=False)


async def test_the_console_check_catches_an_error_on_a_page(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><p>x</p><script>console.error("report broke")</script>')
    with pytest.raises(AssertionError, match="report broke"):
        await open_in_chromium(page.as_uri(), tmp_path, screenshot=tmp_path / "broken.png")


async def test_the_report_file_opens_offline_without_console_errors(tmp_path: Path, history: History) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(history.job_file), "--html", str(out)]) == 0
    shot = tmp_path / "report.png"
    await open_in_chromium(out.as_uri(), tmp_path, screenshot=shot)
    assert_screenshot(shot)
    dom = await open_in_chromium(out.as_uri(), tmp_path, dump_dom=True)
    assert "2 of 5 cases are on Grand Challenge" in dom and dom.count("<svg") == 3


@pytest.fixture
async def status_url(history: History) -> AsyncIterator[str]:
    async with LedgerRunner(history.ledger, load_job(history.job_file).binding) as runner:
        state = RunState(runner=runner, reader_study="example-study", worker_id="host-303", phase="running")
        page = StatusPage(state, ledger_path=history.ledger, events_path=history.events, redact=False)
        server = MonitoringServer(Metrics(state), state, Address("127.0.0.1", 0), ServerCheck(None), status_page=page)
        address = await server.start()
        try:
            yield f"http://127.0.0.1:{address.port}/status"
        finally:
            await server.stop()


async def test_the_live_status_page_opens_without_console_errors(tmp_path: Path, status_url: str) -> None:
    shot = tmp_path / "status.png"
    await open_in_chromium(status_url, tmp_path, screenshot=shot)
    assert_screenshot(shot)
    dom = await open_in_chromium(status_url, tmp_path, dump_dom=True)
    assert 'http-equiv="refresh"' in dom and "Waiting for" in dom

"""Against a server with the real one's capacity (``--profile real``: two web workers, two import workers,
docs/gc-api.md §10), a run keeps its API calls within the adaptive limit, never above the fixed knob, shows the limits in its
metrics and progress line, hands a case's images over one at a time, and spends no request on list scans."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gcbulk.emulator.capacity import profile_named
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.service.metrics import Metrics, RunState
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import EventLog, format_progress_line
from gcbulk.engine.upload.transfer import TransferEngine
from gcbulk.state.ledger import default_ledger_path
from tests.engine.conftest import FAST_ENGINE, load_and_plan, make_tutorial_tree, write_job

CASES = 10
KNOB = 24  # engine.api_calls_in_flight: far above the two web workers, so only the adaptive limit holds calls back
BOUND = 120
API = "api:/api/v1/"


pytestmark = pytest.mark.emulator(capacity=profile_named("real"))


class InFlight:
    """Counts API requests on the wire through aiohttp's trace hooks (the client's own, unchanged request path)."""

    def __init__(self, api_netloc: str) -> None:
        self.api_netloc = api_netloc
        self.now = 0
        self.peak = 0
        self.over_limit: list[tuple[int, int]] = []  # (in flight, the limiter's highest limit so far) when above it
        self.limiter = None

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig(trace_config_ctx_factory=SimpleNamespace)

        async def start(_: object, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams) -> None:
            ctx.api = params.url.raw_authority == self.api_netloc
            if ctx.api:
                self.now += 1
                self.peak = max(self.peak, self.now)
                if self.limiter is not None and self.now > self.limiter.peak_limit:
                    self.over_limit.append((self.now, self.limiter.peak_limit))

        async def end(_: object, ctx: SimpleNamespace, params: object) -> None:
            if getattr(ctx, "api", False):
                self.now -= 1

        config.on_request_start.append(start)
        config.on_request_end.append(end)
        config.on_request_exception.append(end)
        return config


async def test_api_calls_stay_within_the_adaptive_limit_and_no_list_is_scanned_during_a_run(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", CASES)
    job = load_and_plan(write_job(tmp_path, emulator))
    config = dataclasses.replace(
        FAST_ENGINE,
        api_calls_in_flight=KNOB,
        files_in_flight=16,
        cases_in_flight=CASES,
        poll_initial_seconds=0.1,
        poll_max_seconds=0.5,
    )
    in_flight = InFlight(urlsplit(emulator.base_url).netloc)
    lines: list[str] = []
    exposition: list[bytes] = []
    emulator.context.counters.reset()
    async with LedgerRunner(default_ledger_path(job.job_file), job.binding) as runner:
        async with GrandChallengeClient(
            base_url=emulator.base_url,
            token=emulator.tokens["editor"],
            ca_file=emulator.ca_file,
            retry_policy=config.retry,
            api_calls_in_flight=KNOB,
            trace_configs=[in_flight.trace()],
        ) as client:
            in_flight.limiter = client.api_limiter
            events = EventLog(tmp_path / "events.jsonl")
            engine = TransferEngine(client=client, journal=Journal(runner, events), target=job.target, config=config)
            metrics = Metrics(
                RunState(
                    runner=runner,
                    reader_study=job.reader_study,
                    base_url=emulator.base_url,
                    phase="running",
                    stats=engine.stats,
                    engine=engine,
                )
            )

            async def watch() -> None:
                while True:
                    await anyio.sleep(0.3)
                    if engine.context is not None and client.api_limiter.in_flight:
                        lines.append(format_progress_line(engine.stats.snapshot()))
                        exposition.append(metrics.exposition())

            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as group:
                    group.start_soon(watch)
                    outcome = await engine.run()
                    group.cancel_scope.cancel()
            events.close()
            peak_limit = client.api_limiter.peak_limit

    assert outcome.done == CASES and not outcome.failed
    # Never more on the wire than the limiter allowed, and the limiter never above the knob.
    assert in_flight.over_limit == [] and 1 <= in_flight.peak <= peak_limit <= KNOB
    # Seen while it ran: the limits in the progress line and as metrics, the import limit within its knob.
    assert lines and "API calls" in lines[-1] and "imports" in lines[-1]
    gauges = {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition[-1].decode())
        for sample in family.samples
    }
    assert 1 <= gauges["gcbulk_api_calls_limit"] <= KNOB
    assert 2 <= gauges["gcbulk_imports_limit"] <= config.imports_in_flight
    requests = emulator.context.counters.requests
    # No scan of the session list (each import is followed by its own session, docs/gc-api.md §10) and no listing of
    # uploads beyond the one-row count of the account's uploads before the first case (the 2000 cap, docs/gc-api.md §1).
    assert requests.get(f"GET {API}cases/upload-sessions/", 0) == 0
    assert requests.get(f"GET {API}uploads/", 0) == 1
    # The study and its sockets are looked up once per run, not per case.
    assert requests.get(f"GET {API}reader-studies/", 0) == 1
    assert requests.get(f"GET {API}components/interfaces/", 0) <= 2
    # Each image handed over as one upload session aimed at its display set (docs/gc-api.md §10 path (b)), one at a time
    # (engine.stagger_image_values): no values PATCH at all.
    assert requests.get(f"POST {API}cases/upload-sessions/", 0) == 2 * CASES
    assert requests.get(f"PATCH {API}reader-studies/display-sets/{{pk}}/", 0) == 0
    # The server's busy time was counted per endpoint and for its import workers (the benchmarks' per-case figures).
    busy = emulator.context.counters.snapshot()
    assert busy["busy_seconds"][f"POST {API}reader-studies/display-sets/"] >= 0.1 * CASES
    assert busy["import_busy_seconds"] >= 2 * CASES * 0.5  # each image: ≥ 0.5 s of build (docs/gc-api.md §10)

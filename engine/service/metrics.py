"""Prometheus metrics of a run, in the run's own ``CollectorRegistry`` (no process-global state, so tests and a
future multi-job process cannot mix numbers).

Nothing is counted twice: job progress is read at scrape time from where it already lives — cases, items, display
sets and uploads by state from the ledger (``gcbulk.state.report.job_counts``), bytes, rate and ETA from the engine's
``TransferStats.snapshot()`` (rclone's "one stats snapshot feeds everything"), what is in flight from the engine's
limiters. Only what no other part keeps is counted here: retries by reason (through the stats' retry hook) and HTTP
latency (through aiohttp's ``TraceConfig``, so the client's request code stays as it is).

The ledger's sqlite3 connection belongs to the ledger's own thread (``gcbulk.engine.upload.journal.LedgerRunner``), so a scrape
first reads the counts there (awaited, from the aiohttp server on the run's event loop, ``engine/service/health.py``), then
renders; prometheus-client's own HTTP thread is never used, because its collectors could not reach the ledger.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from gcbulk.engine.gc.errors import (
    HttpError,
    TransportError,
    UploadCapReached,
    UploadQuotaReached,
)
from gcbulk.engine.gc.routes import MEDIA, OTHER, route_shape
from gcbulk.engine.service.waits import WaitRecorder
from gcbulk.engine.upload.progress import TransferStats
from gcbulk.state.report import JobCounts, job_counts
from gcbulk.state.workers import WorkerRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A scrape waits this long for the ledger's thread (busy with a large plan, say), then answers without ledger numbers.
LEDGER_READ_TIMEOUT_SECONDS = 5.0
# Request latencies range from a cached GET (ms) to a 16 MiB part PUT on a slow link (tens of seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_LEDGER_KINDS = (
    ("case", "gcbulk_cases", "Cases of the job by state (from the ledger)"),
    ("item", "gcbulk_items", "Socket values of the job by state (from the ledger)"),
    ("display_set", "gcbulk_display_sets", "Display sets of the job by state (from the ledger)"),
    ("upload", "gcbulk_uploads", "Grand Challenge uploads of the job by state (from the ledger)"),
)


def _package_version() -> str:
    try:
        return version("gcbulk")
    except PackageNotFoundError:
        return "unknown"


def retry_reason(error: BaseException | None) -> str:
    """A small, fixed vocabulary for the ``reason`` label (a label per message would explode the series)."""
    if isinstance(error, UploadCapReached):
        return "upload_cap"
    if isinstance(error, UploadQuotaReached):
        return "upload_quota"
    if isinstance(error, HttpError):
        if error.status == 429:
            return "throttled"
        if error.status == 403 and type(error).__name__ == "PresignedUrlExpired":
            return "url_expired"
        return f"http_{error.status}"
    if isinstance(error, (TransportError, aiohttp.ClientError, TimeoutError, OSError)):
        return "network"
    if error is None:
        return "unknown"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


class MonitoredStats(TransferStats):
    """The engine's ``TransferStats``, also reporting each retry's reason. Every retry of the engine (API calls
    through the client's ``on_retry``, part PUTs, re-signed URLs) arrives at ``count_retry(what, error, delay)``."""

    def __init__(self, on_reason: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_reason = on_reason

    def count_retry(self, *args: object) -> None:
        super().count_retry(*args)
        error = args[1] if len(args) > 1 and isinstance(args[1], BaseException) else None
        self._on_reason(retry_reason(error))


@dataclass
class RunState:
    """What the endpoints read. The run (``engine/service/job_service.py``) keeps it current, on the event-loop thread."""

    runner: Any = (
        None  # gcbulk.engine.upload.journal.LedgerRunner: the ledger on its own thread; None before it is open
    )
    reader_study: str = ""
    base_url: str = ""
    worker_id: str = ""  # this process among the job's workers (engine/upload/leases.py)
    phase: str = "starting"  # starting | planning | running | idle | stopping
    stats: TransferStats | None = None  # of the pass in progress, or the last one
    engine: Any = None  # gcbulk.engine.upload.transfer.TransferEngine of the pass in progress, if any
    passes: int = 0
    # For the whole process, across passes: a Prometheus counter must never go down.
    retries_by_reason: Counter[str] = field(default_factory=Counter)
    bytes_sent_by_finished_passes: int = 0
    started_at: float = field(default_factory=time.time)
    waits: WaitRecorder | None = None  # the server's waits, for the event file and /status (engine/service/waits.py)

    def bytes_sent(self) -> int:
        """Bytes this process has put on the wire and kept (a failed attempt's bytes are taken back), all passes."""
        current = 0
        if self.engine is not None and self.stats is not None:
            snap = self.stats.snapshot()
            current = max(snap.bytes_done - snap.bytes_resumed, 0)
        return self.bytes_sent_by_finished_passes + current

    def pass_finished(self) -> None:
        if self.stats is not None:
            snap = self.stats.snapshot()
            self.bytes_sent_by_finished_passes += max(snap.bytes_done - snap.bytes_resumed, 0)
        self.engine = None

    def count_retry_reason(self, reason: str) -> None:
        self.retries_by_reason[reason] += 1
        if self.waits is not None:
            self.waits.retry(reason)

    def new_stats(self) -> MonitoredStats:
        return MonitoredStats(self.count_retry_reason)

    def in_flight(self) -> tuple[int, int]:
        """(files, parts) being uploaded now, from the pass's limiters (their borrowers are exactly that)."""
        context = getattr(self.engine, "context", None)
        if context is None:
            return 0, 0
        return int(context.files_limiter.borrowed_tokens), int(context.parts_limiter.borrowed_tokens)


PHASES = ("starting", "planning", "running", "idle", "stopping")


class RunCollector(Collector):
    """Reads the ledger, the snapshot and the limiters at scrape time."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.counts: JobCounts | None = None  # read from the ledger just before each render

    def collect(self) -> Iterator[Any]:
        state = self.state
        yield InfoMetricFamily(
            "gcbulk",
            "The gcbulk build and the job it runs",
            value={
                "version": _package_version(),
                "reader_study": state.reader_study,
                "base_url": state.base_url,
                "worker": state.worker_id,
            },
        )
        phase = GaugeMetricFamily("gcbulk_phase", "1 for the phase the run is in", labels=["phase"])
        for name in PHASES:
            phase.add_metric([name], 1.0 if state.phase == name else 0.0)
        yield phase
        yield GaugeMetricFamily(
            "gcbulk_passes", "Transfer passes started (follow mode runs one per new work)", value=state.passes
        )
        yield GaugeMetricFamily("gcbulk_start_time_seconds", "Unix time the run started", value=state.started_at)
        yield GaugeMetricFamily(
            "gcbulk_ledger_read_ok",
            "1 when this scrape could read the ledger in time",
            value=0.0 if self.counts is None else 1.0,
        )
        yield from self._ledger_metrics()
        yield from self._snapshot_metrics()
        yield from self._in_flight_metrics()
        retries = CounterMetricFamily(
            "gcbulk_retries", "Retries by reason (network, throttled, http_503, …)", labels=["reason"]
        )
        for reason, count in sorted(state.retries_by_reason.items()):
            retries.add_metric([reason], count)
        yield retries

    def _ledger_metrics(self) -> Iterator[Any]:
        counts = self.counts
        if counts is None:
            return
        for kind, name, text in _LEDGER_KINDS:
            family = GaugeMetricFamily(name, text, labels=["state"])
            for state_name, count in sorted(counts.by_state.get(kind, {}).items()):
                family.add_metric([state_name], count)
            yield family
        yield GaugeMetricFamily(
            "gcbulk_uploads_live", "Uploads counting against the server's 2000-upload cap", value=counts.live_uploads
        )
        yield GaugeMetricFamily(
            "gcbulk_imports_in_flight",
            "Image values handed to Grand Challenge, import not done",
            value=counts.imports_in_flight,
        )
        yield from _worker_metrics(counts.workers, serving=self.state.worker_id)

    def _snapshot_metrics(self) -> Iterator[Any]:
        yield CounterMetricFamily(
            "gcbulk_bytes_sent", "Bytes this process sent to S3 and kept, all passes", value=self.state.bytes_sent()
        )
        stats = self.state.stats
        if stats is None:
            return
        snap = stats.snapshot()
        eta = snap.eta_seconds
        for name, text, value in (
            (
                "gcbulk_pass_bytes_done",
                "Bytes of the current (or last) pass's files on S3, parts sent by an earlier run included",
                snap.bytes_done,
            ),
            ("gcbulk_pass_bytes_total", "Bytes of the files the current (or last) pass has to send", snap.bytes_total),
            ("gcbulk_pass_files_done", "Files uploaded by the current (or last) pass", snap.files_done),
            ("gcbulk_pass_files_total", "Files the current (or last) pass has to upload", snap.files_total),
            (
                "gcbulk_throughput_bytes_per_second",
                "Upload rate over the recent window (0 between passes)",
                snap.bytes_per_second if self.state.engine is not None else 0.0,
            ),
            (
                "gcbulk_eta_seconds",
                "Estimated seconds to send the rest (NaN while unknown)",
                math.nan if eta is None else eta,
            ),
        ):
            yield GaugeMetricFamily(name, text, value=value)

    def _in_flight_metrics(self) -> Iterator[Any]:
        files, parts = self.state.in_flight()
        yield GaugeMetricFamily("gcbulk_uploads_in_flight", "Files being uploaded now", value=files)
        yield GaugeMetricFamily("gcbulk_parts_in_flight", "Part PUTs on the wire now", value=parts)
        client = getattr(self.state.engine, "client", None)
        if client is not None:  # the adaptive limits (engine/gc/pacer.py); the knobs are their upper bounds
            limiter = client.api_limiter
            yield GaugeMetricFamily(
                "gcbulk_api_calls_limit", "API calls allowed in flight now (adaptive)", value=limiter.limit
            )
            yield GaugeMetricFamily("gcbulk_api_calls_in_flight", "API calls on the wire now", value=limiter.in_flight)
        context = getattr(self.state.engine, "context", None)
        if context is not None:
            yield GaugeMetricFamily(
                "gcbulk_imports_limit",
                "Image imports allowed in flight now (adaptive)",
                value=context.import_pacer.limit,
            )


def _worker_metrics(workers: tuple[WorkerRow, ...], *, serving: str = "") -> Iterator[GaugeMetricFamily]:
    """Every worker of the job, as the ledger knows them, so one scrape of any worker shows them all; per-worker
    series only for the live ones (a label set that stays as small as the fleet). The worker answering this scrape
    (``serving``) is live whatever its row says: an idle follow-mode worker between passes sends no heartbeat, and
    before its first pass it has no row at all."""
    by_status = GaugeMetricFamily(
        "gcbulk_workers",
        "Workers of this job: live, stopped, or silent (no heartbeat within a lease: killed or cut off)",
        labels=["status"],
    )
    statuses = Counter(
        "live" if w.live or w.worker_id == serving else "stopped" if w.stopped else "silent" for w in workers
    )
    if serving and not any(w.worker_id == serving for w in workers):
        statuses["live"] += 1
    for status in ("live", "stopped", "silent"):
        by_status.add_metric([status], statuses.get(status, 0))
    yield by_status
    live = [w for w in workers if w.live]
    metrics: tuple[tuple[str, str, Callable[[WorkerRow], float]], ...] = (
        ("gcbulk_worker_cases_leased", "Cases a live worker holds a lease on", lambda w: w.cases_leased),
        (
            "gcbulk_worker_heartbeat_age_seconds",
            "Seconds since a live worker's last heartbeat",
            lambda w: w.seconds_since_heartbeat,
        ),
        (
            "gcbulk_worker_bytes_done",
            "Bytes of a live worker's current pass on S3, at its last heartbeat",
            lambda w: w.progress.get("bytes_done", 0),
        ),
        ("gcbulk_worker_api_calls_limit", "A live worker's adaptive API-call limit", lambda w: w.api_limit or 0),
    )
    for name, text, value_of in metrics:
        family = GaugeMetricFamily(name, text, labels=["worker"])
        for worker in live:
            family.add_metric([worker.worker_id], value_of(worker))
        yield family


class Metrics:
    """The registry of one run: its collector and the HTTP latency histogram."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = RunCollector(state)
        self.registry.register(self.collector)
        self.http_latency = Histogram(
            "gcbulk_http_request_duration_seconds",
            "Latency of HTTP requests to Grand Challenge (api) and its object store (s3), by endpoint and outcome",
            labelnames=("target", "method", "endpoint", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._api_netloc = urlsplit(state.base_url).netloc
        self._api_path = urlsplit(state.base_url).path

    def exposition(self, counts: JobCounts | None = None) -> bytes:
        """The text format, with ``counts`` as the ledger numbers (None leaves them out)."""
        self.collector.counts = counts
        try:
            return generate_latest(self.registry)
        finally:
            self.collector.counts = None

    async def scrape(self) -> bytes:
        """Reads the ledger's counts on its thread, then renders everything."""
        return self.exposition(await read_job_counts(self.state))

    # ---- HTTP latency through aiohttp's TraceConfig -----------------------------------------------------------

    def endpoint_of(self, url: Any) -> tuple[str, str]:
        """``(target, endpoint)``: the endpoint is one of the API's known route shapes (``engine/gc/routes.py``),
        ``media`` or ``other``, never a raw path, so the label set is fixed however many uploads a service makes.
        S3 keys and presigned queries are never labels."""
        parts = urlsplit(str(url))
        if parts.netloc != self._api_netloc:
            return "s3", "part"
        if not parts.path.startswith(self._api_path):
            return "api", MEDIA if parts.path.startswith("/media/") else OTHER
        return "api", route_shape(parts.path[len(self._api_path) :])

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig(trace_config_ctx_factory=SimpleNamespace)

        async def on_start(_: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
            ctx.started = time.perf_counter()

        async def on_end(_: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
            self._observe(ctx, params.method, params.url, f"{params.response.status // 100}xx")

        async def on_exception(_: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
            self._observe(ctx, params.method, params.url, "error")

        config.on_request_start.append(on_start)
        config.on_request_end.append(on_end)
        config.on_request_exception.append(on_exception)
        return config

    def _observe(self, ctx: SimpleNamespace, method: str, url: Any, outcome: str) -> None:
        started = getattr(ctx, "started", None)
        if started is None:
            return
        target, endpoint = self.endpoint_of(url)
        self.http_latency.labels(target, method, endpoint, outcome).observe(time.perf_counter() - started)


async def read_job_counts(state: RunState, timeout: float = LEDGER_READ_TIMEOUT_SECONDS) -> JobCounts | None:
    """The ledger's counts, or None when the ledger is not open or its thread is busy for longer than ``timeout``."""
    if state.runner is None or not state.runner.is_open:
        return None
    try:
        return await asyncio.wait_for(state.runner.with_ledger(job_counts), timeout)
    except TimeoutError:
        return None

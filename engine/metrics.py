"""Prometheus metrics of a run, in the run's own ``CollectorRegistry`` (no process-global state, so tests and a
future multi-job process cannot mix numbers).

Nothing is counted twice: job progress is read at scrape time from where it already lives — cases, items, display
sets and uploads by state from the ledger (``counts_by_state``), bytes, rate and ETA from the engine's
``TransferStats.snapshot()`` (rclone's "one stats snapshot feeds everything"), what is in flight from the engine's
limiters. Only what no other part keeps is counted here: retries by reason (through the stats' retry hook) and HTTP
latency (through aiohttp's ``TraceConfig``, so the client's request code stays as it is).

The scrape reads the ledger, whose sqlite3 connection belongs to the event-loop thread, so the endpoints are served
by an aiohttp server on that loop (``engine/health.py``), never by prometheus-client's own HTTP thread.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from engine.errors import HttpError, TransportError, UploadCapReached, UploadQuotaReached
from engine.progress import TransferStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request latencies range from a cached GET (ms) to a 16 MiB part PUT on a slow link (tens of seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_ID_SEGMENT = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d+|[0-9a-f]{24,})$", re.I)
_LEDGER_KINDS = (("case", "gcbulk_cases", "Cases of the job by state (from the ledger)"),
                 ("item", "gcbulk_items", "Socket values of the job by state (from the ledger)"),
                 ("display_set", "gcbulk_display_sets", "Display sets of the job by state (from the ledger)"),
                 ("upload", "gcbulk_uploads", "Grand Challenge uploads of the job by state (from the ledger)"))


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
    """The engine's ``TransferStats``, also counting retries by reason. Every retry of the engine (API calls through
    the client's ``on_retry``, part PUTs, re-signed URLs) arrives at ``count_retry(what, error, delay)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retries_by_reason: Counter[str] = Counter()

    def count_retry(self, *args: object) -> None:
        super().count_retry(*args)
        error = args[1] if len(args) > 1 and isinstance(args[1], BaseException) else None
        with self._lock:
            self.retries_by_reason[retry_reason(error)] += 1


@dataclass
class RunState:
    """What the endpoints read. The run (``engine/follow.py``) keeps it current, on the event-loop thread."""

    # state.ledger.Ledger, opened by the run on the loop thread; None while a worker thread holds it to plan.
    ledger: Any = None
    reader_study: str = ""
    base_url: str = ""
    phase: str = "starting"  # starting | planning | running | idle | stopping
    stats: TransferStats | None = None
    context: Any = None  # engine.transfer_context.TransferContext of the pass in progress, if any
    passes: int = 0
    retries_by_reason: Counter[str] = field(default_factory=Counter)  # of finished passes
    started_at: float = field(default_factory=time.time)

    def all_retries_by_reason(self) -> Counter[str]:
        current = getattr(self.stats, "retries_by_reason", None) or Counter()
        return self.retries_by_reason + current

    def finish_pass(self) -> None:
        """Keeps the finished pass's retry counts: the counter must not go down when the next pass starts."""
        self.retries_by_reason = self.all_retries_by_reason()
        self.context = None


PHASES = ("starting", "planning", "running", "idle", "stopping")


class RunCollector(Collector):
    """Reads the ledger, the snapshot and the limiters at scrape time."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        state = self.state
        yield InfoMetricFamily("gcbulk", "The gcbulk build and the job it runs",
                               value={"version": _package_version(), "reader_study": state.reader_study,
                                      "base_url": state.base_url})
        phase = GaugeMetricFamily("gcbulk_phase", "1 for the phase the run is in", labels=["phase"])
        for name in PHASES:
            phase.add_metric([name], 1.0 if state.phase == name else 0.0)
        yield phase
        yield GaugeMetricFamily("gcbulk_passes", "Transfer passes started (follow mode runs one per new work)",
                                value=state.passes)
        yield GaugeMetricFamily("gcbulk_start_time_seconds", "Unix time the run started", value=state.started_at)
        yield from self._ledger_metrics()
        yield from self._snapshot_metrics()
        yield from self._in_flight_metrics()
        retries = CounterMetricFamily("gcbulk_retries", "Retries by reason (network, throttled, http_503, …)",
                                      labels=["reason"])
        for reason, count in sorted(state.all_retries_by_reason().items()):
            retries.add_metric([reason], count)
        yield retries

    def _ledger_metrics(self) -> Iterator[Any]:
        ledger = self.state.ledger
        if ledger is None:
            return
        counts = ledger.counts_by_state()
        for kind, name, text in _LEDGER_KINDS:
            family = GaugeMetricFamily(name, text, labels=["state"])
            for state_name, count in sorted(counts.get(kind, {}).items()):
                family.add_metric([state_name], count)
            yield family
        yield GaugeMetricFamily("gcbulk_uploads_live", "Uploads counting against the server's 2000-upload cap",
                                value=ledger.live_upload_count())
        yield GaugeMetricFamily("gcbulk_imports_in_flight", "Image values handed to Grand Challenge, import not done",
                                value=ledger.attached_image_items_count())

    def _snapshot_metrics(self) -> Iterator[Any]:
        stats = self.state.stats
        if stats is None:
            return
        snap = stats.snapshot()
        eta = snap.eta_seconds
        for name, text, value in (
            ("gcbulk_bytes_sent", "Bytes of the files to send that are on S3 (parts recorded by earlier runs count)",
             snap.bytes_done),
            ("gcbulk_bytes_total", "Bytes of the files this pass has to send", snap.bytes_total),
            ("gcbulk_files_done", "Files uploaded in this pass", snap.files_done),
            ("gcbulk_files_total", "Files this pass has to upload", snap.files_total),
            ("gcbulk_throughput_bytes_per_second", "Upload rate over the recent window", snap.bytes_per_second),
            ("gcbulk_eta_seconds", "Estimated seconds to send the rest (NaN while unknown)",
             math.nan if eta is None else eta),
        ):
            yield GaugeMetricFamily(name, text, value=value)

    def _in_flight_metrics(self) -> Iterator[Any]:
        context = self.state.context
        files = parts = 0
        if context is not None:
            files = context.files_limiter.borrowed_tokens
            parts = context.parts_limiter.borrowed_tokens
        yield GaugeMetricFamily("gcbulk_uploads_in_flight", "Files being uploaded now", value=files)
        yield GaugeMetricFamily("gcbulk_parts_in_flight", "Part PUTs on the wire now", value=parts)


class Metrics:
    """The registry of one run: its collector and the HTTP latency histogram."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RunCollector(state))
        self.http_latency = Histogram(
            "gcbulk_http_request_duration_seconds",
            "Latency of HTTP requests to Grand Challenge (api) and its object store (s3), by endpoint and outcome",
            labelnames=("target", "method", "endpoint", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._api_netloc = urlsplit(state.base_url).netloc
        self._api_path = urlsplit(state.base_url).path

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # ---- HTTP latency through aiohttp's TraceConfig -----------------------------------------------------------

    def endpoint_of(self, url: Any) -> tuple[str, str]:
        """``(target, endpoint)`` with ids replaced by ``{id}``, so the label set stays small. S3 keys and
        presigned queries are never labels."""
        parts = urlsplit(str(url))
        if parts.netloc != self._api_netloc:
            return "s3", "part"
        path = parts.path[len(self._api_path):] if parts.path.startswith(self._api_path) else parts.path
        segments = ["{id}" if _ID_SEGMENT.match(s) else s for s in path.split("/")]
        return "api", "/".join(segments)

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


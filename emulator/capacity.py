"""The capacity profile (``--profile real``): the real server's finite workers and service times (docs/gc-api.md §10).

Without it the emulator answers every request at once. With it:

* a pool of ``api_workers`` (2, the server's web workers) serves API requests; a request beyond the pool waits for a
  worker, so throughput peaks at the pool size;
* each request holds its worker for the endpoint's median service time measured on the real server, plus ~5 ms per
  row a list page returns (a 1000-row page holds a worker for ~5 s);
* every request waiting for a worker makes each request being served ``queued_request_seconds`` (3 ms) slower, so
  throughput *falls* beyond the pool, as §10 measured (16 in flight: 15 display-set POSTs/s and 8 values PATCHes/s,
  down from ≈ 20/s and ≈ 10/s). The cause modelled: uvicorn accepts every connection at once and its worker's event
  loop reads, parses and polls the waiting requests on the same interpreter (the same GIL) as the Django view it is
  serving, so each waiting request takes a slice of the worker's time. A waiting request holds no worker itself;
* the import workers (``import_workers``, 2) take ≈ 0.5 s plus time per MiB to build each image, and when two values
  of one display set link at the same moment the second holds its worker for a random 0–5 s before retrying.

The figures are docs/gc-api.md §10's table (medians, a quiet box, gcbulk's own client with keep-alive).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gcbulk.emulator.counters import COUNTERS, endpoint_name
from gcbulk.emulator.http import ROWS_RETURNED, SERVICE_VARIANT

API = "/api/v1/"
# (method, path pattern below /api/v1/, seconds a worker is held, seconds per row returned): docs/gc-api.md §10's medians.
SERVICE_TIMES: tuple[tuple[str, str, float, float], ...] = (
    ("GET", r"gcapi/", 0.020, 0.0),
    ("GET", r"components/interfaces/(\d+/)?", 0.026, 0.0),
    ("GET", r"reader-studies/", 0.205, 0.0),
    ("POST", r"uploads/", 0.056, 0.0),
    ("GET", r"uploads/", 0.0, 0.005),
    ("GET", r"uploads/[^/]+/", 0.032, 0.0),
    ("PATCH", r"uploads/[^/]+/[^/]+/generate-presigned-urls/", 0.075, 0.0),
    ("PATCH", r"uploads/[^/]+/[^/]+/complete-multipart-upload/", 0.074, 0.0),
    ("POST", r"reader-studies/display-sets/", 0.105, 0.0),
    ("POST order", r"reader-studies/display-sets/", 0.137, 0.0),
    ("GET", r"reader-studies/display-sets/", 0.050, 0.005),
    ("GET", r"reader-studies/display-sets/[^/]+/", 0.057, 0.0),
    ("PATCH", r"reader-studies/display-sets/[^/]+/", 0.220, 0.0),
    ("GET", r"cases/upload-sessions/", 0.0, 0.005),
    ("GET", r"cases/upload-sessions/[^/]+/", 0.054, 0.0),
    # Not in §10's table (not measured): taken as dear as the other writes that hand work to another service
    # (presign 75 ms, complete 74 ms) rather than the 30 ms default, so a client leaning on it is not flattered.
    ("POST", r"cases/upload-sessions/", 0.075, 0.0),
    # Archive items (docs/gc-api.md §12), not measured either: the same serializer mixin, value handling and permission
    # filter as display sets, so taken at the display sets' cost rather than the light default.
    ("POST", r"archives/items/", 0.105, 0.0),
    ("GET", r"archives/items/", 0.050, 0.005),
    ("GET", r"archives/items/[^/]+/", 0.057, 0.0),
    ("PATCH", r"archives/items/[^/]+/", 0.220, 0.0),
    ("PUT", r"archives/items/[^/]+/", 0.220, 0.0),
)
DEFAULT_SERVICE_SECONDS = 0.030  # calls the table does not list: about a light detail GET
PROFILES = ("real",)


@dataclass(frozen=True, kw_only=True)
class CapacityProfile:
    api_workers: int = 2
    import_workers: int = 2
    # build_images: ≈ 0.5–0.7 s for 1–16 MiB, ≈ 1.5 s for 64 MiB (docs/gc-api.md §10).
    build_base_seconds: float = 0.5
    build_seconds_per_mib: float = 0.016
    link_seconds: float = 0.1
    lock_retry_max_seconds: float = 5.0
    # What each request waiting for a worker adds to the service time of a request being served. Fitted to §10's
    # 16-in-flight figures (14 waiting): POSTs 105 ms → 147 ms (model 13.6/s, §10 15/s), PATCHes 220 ms → 262 ms
    # (model 7.6/s, §10 8/s).
    queued_request_seconds: float = 0.003
    service_times: tuple[tuple[str, str, float, float], ...] = SERVICE_TIMES
    _compiled: list[tuple[str, re.Pattern[str], float, float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = [(m, re.compile(p), base, row) for m, p, base, row in self.service_times]
        object.__setattr__(self, "_compiled", compiled)

    def service_seconds(self, method: str, path: str, rows: int, variant: str = "") -> float:
        """How long a worker is held for this request, given the rows its list page returned and its variant (e.g.
        ``order`` for a display-set POST that sends one)."""
        tail = path[len(API) :] if path.startswith(API) else path
        for wanted_method in ([f"{method} {variant}"] if variant else []) + [method]:
            for wanted, pattern, base, per_row in self._compiled:
                if wanted == wanted_method and pattern.fullmatch(tail):
                    return base + per_row * rows
        return DEFAULT_SERVICE_SECONDS

    def queue_cost_seconds(self, waiting: int) -> float:
        """What ``waiting`` requests queued for a worker add to the service time of each request being served."""
        return self.queued_request_seconds * waiting

    def closed_loop_rate(self, method: str, path: str, in_flight: int) -> float:
        """Requests per second a client keeping ``in_flight`` of one request in flight gets, by this model."""
        busy = min(in_flight, self.api_workers)
        held = self.service_seconds(method, path, 0) + self.queue_cost_seconds(in_flight - busy)
        return busy / held

    def build_seconds(self, size_bytes: int) -> float:
        return self.build_base_seconds + self.build_seconds_per_mib * size_bytes / 1024**2


def profile_named(name: str) -> CapacityProfile:
    if name not in PROFILES:
        raise ValueError(f"unknown capacity profile {name!r}; use one of: {', '.join(PROFILES)}")
    return CapacityProfile()


class _WorkerPool:
    """``size`` workers; knows how many requests are waiting for one (they cost the busy workers time)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._slots = asyncio.Semaphore(size)
        self._in_server = 0  # requests holding or waiting for a worker
        self.serving = 0  # requests holding a worker

    @property
    def waiting(self) -> int:
        return max(0, self._in_server - self._size)

    async def __aenter__(self) -> None:
        self._in_server += 1
        try:
            await self._slots.acquire()
        except BaseException:  # a request cancelled while queued leaves the queue
            self._in_server -= 1
            raise
        self.serving += 1

    async def __aexit__(self, *exc_info: object) -> None:
        self.serving -= 1
        self._in_server -= 1
        self._slots.release()


def capacity_middleware_for(profile: CapacityProfile) -> Callable[..., Any]:
    """Holds one of ``api_workers`` slots for each API request's service time; other requests queue for a slot and
    slow down the requests being served (``CapacityProfile.queued_request_seconds``)."""
    workers = _WorkerPool(profile.api_workers)

    @web.middleware
    async def capacity_middleware(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if not request.path.startswith(API):
            return await handler(request)
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        async with workers:
            started = loop.time()
            counters = request.app.get(COUNTERS)
            if counters is not None:
                counters.peak_api_serving = max(counters.peak_api_serving, workers.serving)
            response = await handler(request)
            handled = loop.time() - started  # the emulator's own time for it
            variant = request.get(SERVICE_VARIANT, "")
            work = profile.service_seconds(request.method, request.path, request.get(ROWS_RETURNED, 0), variant)
            held = work + profile.queue_cost_seconds(workers.waiting)
            await asyncio.sleep(max(0.0, held - handled))
            if counters is not None:
                # The modelled server's time, not the wall read back after the sleep: on a loaded machine the sleep
                # overruns, and that lateness is the test machine's, not the server's. Only an empty list page,
                # which the model gives no time, is charged the emulator's own.
                charged = held or handled
                counters.busy_seconds[endpoint_name(request)] += charged
                # Its time in the server (the wait for a worker, and what the queue added) over its work alone.
                counters.latency_ratios.append((started - arrived + charged) / max(work or handled, 1e-6))
            return response

    return capacity_middleware

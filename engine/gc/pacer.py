"""Adaptive concurrency: how many requests (or imports) to keep in flight, learned from how the server answers.

Grand Challenge's capacity is a handful of web and import workers (docs/gc-api.md §10: two of each on the measured server).
Requests beyond them only queue: throughput stops rising and then *falls*, and latency grows linearly. So the right
number in flight is not a constant: it is as many as keep latency near its unloaded floor. ``AimdPolicy`` is that
rule as a pure function (TCP's additive increase, multiplicative decrease, driven by latency as in Vegas/gradient
limiters): it grows by about one per window of samples while latency stays within ``tolerance`` × the floor, and
shrinks by ``backoff`` when latency rises past it, or at once on 429, 503 or a timeout. The fixed knob
(``engine.api_calls_in_flight``, ``engine.imports_in_flight``) is its upper bound.

Hand-written because no maintained Python library does adaptive *concurrency* (``aiolimiter`` and friends limit the
*rate*, which needs the server's capacity known in advance — the very number we are learning). Netflix's
``concurrency-limits`` (Java) is the model.

Latency floors are kept per endpoint shape: a 1000-row list page and a presign differ by 100× (§10), and the limiter
must compare each request with its own kind.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

import anyio
import anyio.lowlevel

# The queue order of the requests made in this context: lowest first. The run's own calls (listing the study,
# counting uploads) keep the default and go first; each case sets its place in the run (``case_rank``), so its
# requests — and its files' — come before those of cases started after it.
request_rank: ContextVar[tuple[int, ...]] = ContextVar("request_rank", default=(0,))


def case_rank(order: int) -> tuple[int, ...]:
    return (1, order)


@dataclass(frozen=True, kw_only=True)
class PacerState:
    limit: float
    # Each endpoint's unloaded latency: the minimum over the current and the previous window, so a floor that was
    # measured once on an idle server is forgotten after two windows (the server's speed drifts over days).
    floors: dict[str, float] = field(default_factory=dict)
    window_floors: dict[str, float] = field(default_factory=dict)
    samples_in_window: int = 0
    # After a decrease, no further decrease until this many samples: the requests already in flight were sent
    # under the old limit and their latency says nothing about the new one.
    cooldown: int = 0
    # Until the first decrease, the limit grows by one per answer (TCP's slow start) instead of one per window: a
    # server with room (or a long round trip that needs many requests in flight) is found in tens of answers.
    slow_start: bool = True

    @property
    def current(self) -> int:
        return max(1, math.floor(self.limit))


@dataclass(frozen=True, kw_only=True)
class AimdPolicy:
    minimum: int = 1
    maximum: int = 16
    initial: int = 2
    tolerance: float = 2.0  # latency above tolerance × floor means requests are queueing
    backoff: float = 0.7
    window: int = 50  # samples per floor window

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.initial <= self.maximum:
            raise ValueError(
                f"need 1 <= minimum ({self.minimum}) <= initial ({self.initial}) <= maximum ({self.maximum})"
            )
        if not 0 < self.backoff < 1 or self.tolerance <= 1:
            raise ValueError("backoff must be in (0, 1) and tolerance above 1")

    def start(self) -> PacerState:
        return PacerState(limit=float(self.initial))

    def on_success(self, state: PacerState, key: str, latency: float, in_flight: int) -> PacerState:
        """A request of endpoint ``key`` answered in ``latency`` seconds with ``in_flight`` requests out."""
        floors = dict(state.floors)
        window_floors = dict(state.window_floors)
        window_floors[key] = min(latency, window_floors.get(key, math.inf))
        floor = min(latency, floors.get(key, math.inf))
        floors[key] = floor
        samples = state.samples_in_window + 1
        if samples >= self.window:  # roll the window: the floor is the min of this window and the last
            floors = dict(window_floors)
            window_floors, samples = {}, 0
        cooldown = max(0, state.cooldown - 1)
        limit = state.limit
        slow_start = state.slow_start
        if latency > self.tolerance * floor:
            if cooldown == 0:
                limit, cooldown, slow_start = self._decreased(limit), state.current, False
        elif in_flight >= state.current - 1:
            # Only a limit that is actually used may grow: idle headroom says nothing about the server.
            limit = min(float(self.maximum), limit + (1.0 if slow_start else 1.0 / max(limit, 1.0)))
        return replace(
            state,
            limit=limit,
            floors=floors,
            window_floors=window_floors,
            samples_in_window=samples,
            cooldown=cooldown,
            slow_start=slow_start,
        )

    def on_overload(self, state: PacerState) -> PacerState:
        """429, 503 or a timeout: back off now (once per cooldown)."""
        if state.cooldown > 0:
            return state
        return replace(state, limit=self._decreased(state.limit), cooldown=state.current, slow_start=False)

    def _decreased(self, limit: float) -> float:
        return max(float(self.minimum), limit * self.backoff)


def api_policy(upper: int, *, adaptive: bool = True) -> AimdPolicy:
    """API calls: from 2 in flight (the measured server's web workers, docs/gc-api.md §10) up to ``upper`` (the knob).
    ``adaptive=False`` pins the limit at ``upper``: the fixed setting the benchmarks compare against."""
    if not adaptive:
        return AimdPolicy(minimum=upper, initial=upper, maximum=upper)
    # tolerance 1.5: a request that waited half its own service time for a worker already means the workers are
    # all busy; issue 16 wants the server's p90 within 2× its unloaded time.
    return AimdPolicy(minimum=1, initial=min(2, upper), maximum=upper, tolerance=1.5)


def import_policy(upper: int, *, adaptive: bool = True) -> AimdPolicy:
    """Image imports in flight, at most ``upper`` (the knob, itself at most the server's 16).

    At least 8: the server has two import workers (§10), and an import's latency here runs from its hand-over to the
    poll that sees it, so a queue of one import ahead of each worker (twice the floor) is normal; tolerance 3 backs
    off only past that. A case that hands its images over one at a time holds one unit for them (about one of its
    imports is on the server at a time, ``CaseUpload``): with one unit per image and at least 8, half the units sat
    with images not yet handed over and the workers idled (benchmarks/README.md, "The import gate counts imports on
    the server"). One sample per import, so a short window."""
    if not adaptive:
        return AimdPolicy(minimum=upper, initial=upper, maximum=upper)
    low = min(8, upper)
    return AimdPolicy(minimum=low, initial=min(12, upper), maximum=upper, tolerance=3.0, window=20)


class AdaptiveLimiter:
    """``async with limiter.slot(key):`` around a request: waits while ``in_flight`` is at the learned limit.

    ``outcome`` inside the block reports how it went: leave it for a success (its latency is measured), call
    ``slot.overloaded()`` on 429 / 503 / timeout, or ``slot.ignore()`` for an answer that says nothing about load
    (a 4xx about the request itself). An exception out of the block counts as ignored unless marked overloaded.

    Queued requests are served in ``request_rank`` order (then first come, first served): a case's rank is its
    place in the run, so the web workers' time goes first to the cases closest to handing work to the importer —
    the server's bottleneck — instead of being spread over every case in flight (see ``request_rank``).
    """

    def __init__(
        self,
        policy: AimdPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.policy = policy
        self.state = policy.start()
        self.in_flight = 0
        self._clock = clock
        # (rank, arrival, waiter): a heap, because ranks arrive out of order. Hand-written: anyio's and asyncio's
        # locks, semaphores and conditions wake in arrival order only.
        self._queue: list[tuple[tuple[int, ...], int, _Waiter]] = []
        self._arrivals = itertools.count()
        self._waiting = 0  # queued and not cancelled
        self._on_change = on_change
        self.peak_in_flight = 0  # the most requests ever out at once (tests and benchmarks compare it to the bound)
        self.peak_limit = self.limit  # the highest the limit has been

    @property
    def limit(self) -> int:
        return self.state.current

    @property
    def waiting(self) -> int:
        return self._waiting

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[_Slot]:
        await self._take_turn(request_rank.get())
        slot = _Slot(started=self._clock())
        try:
            yield slot
        except BaseException:
            if slot.outcome == "success":  # an error the caller did not classify says nothing about load
                slot.outcome = "ignored"
            raise
        finally:
            before = self.limit
            if slot.outcome == "overloaded":
                self.state = self.policy.on_overload(self.state)
            elif slot.outcome == "success":
                self.state = self.policy.on_success(self.state, key, self._clock() - slot.started, self.in_flight)
            self.in_flight -= 1
            self.peak_limit = max(self.peak_limit, self.limit)
            self._admit_waiters()
            if self._on_change is not None and self.limit != before:
                self._on_change(self.limit)

    async def _take_turn(self, rank: tuple[int, ...]) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self.in_flight < self.limit and not self._waiting:
            self._count_in()
            return
        waiter = _Waiter(anyio.Event())
        heapq.heappush(self._queue, (rank, next(self._arrivals), waiter))
        self._waiting += 1
        try:
            await waiter.admitted.wait()
        except BaseException:
            if waiter.admitted.is_set():  # admitted as it was cancelled: the slot goes to the next in line
                self.in_flight -= 1
                self._admit_waiters()
            else:
                waiter.left = True
                self._waiting -= 1
            raise

    def _admit_waiters(self) -> None:
        """Hands free slots to the best-ranked waiters (the limit may have grown by more than one): each wake-up
        is a slot, so no waiter wakes in vain."""
        while self._queue and self.in_flight < self.limit:
            *_, waiter = heapq.heappop(self._queue)
            if waiter.left:
                continue
            self._waiting -= 1
            self._count_in()
            waiter.admitted.set()

    def _count_in(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)


@dataclass
class _Waiter:
    admitted: anyio.Event
    left: bool = False  # cancelled while queued: skipped when its turn comes


@dataclass
class _Slot:
    started: float
    outcome: str = "success"

    def overloaded(self) -> None:
        self.outcome = "overloaded"

    def ignore(self) -> None:
        self.outcome = "ignored"

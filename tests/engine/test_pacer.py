"""The adaptive concurrency limit: grows while the server answers at its unloaded speed, backs off when requests
only queue (latency rises) or the server says it is saturated (429 / 503 / timeouts), and stays within its bounds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from gcbulk.engine.gc.pacer import AdaptiveLimiter, AimdPolicy, case_rank, request_rank

POLICY = AimdPolicy(minimum=1, maximum=16, initial=2, tolerance=2.0, backoff=0.5, window=50)


def _busy(policy: AimdPolicy, state, latency: float, n: int, key: str = "presign"):
    for _ in range(n):
        state = policy.on_success(state, key, latency, in_flight=state.current)
    return state


def test_the_limit_grows_while_latency_stays_at_its_floor() -> None:
    state = _busy(POLICY, POLICY.start(), 0.05, 60)
    assert state.current > 2


def test_the_limit_never_grows_past_the_fixed_knob() -> None:
    state = _busy(POLICY, POLICY.start(), 0.05, 5000)
    assert state.current == 16


def test_idle_headroom_does_not_grow_the_limit() -> None:
    state = POLICY.start()
    for _ in range(200):
        state = POLICY.on_success(state, "presign", 0.05, in_flight=0)
    assert state.current == 2


def test_latency_rising_past_the_tolerance_backs_off() -> None:
    state = _busy(POLICY, POLICY.start(), 0.05, 200)
    grown = state.current
    state = POLICY.on_success(state, "presign", 0.5, in_flight=state.current)
    assert state.current < grown


def test_one_backoff_per_window_of_requests_already_in_flight() -> None:
    state = _busy(POLICY, POLICY.start(), 0.05, 200)
    once = POLICY.on_success(state, "presign", 0.5, in_flight=state.current)
    twice = POLICY.on_success(once, "presign", 0.5, in_flight=once.current)
    assert twice.current == once.current  # the second slow answer was sent under the old limit


@pytest.mark.parametrize("cause", ["429", "503", "timeout"])
def test_an_overloaded_server_halves_the_limit_but_never_below_the_minimum(cause: str) -> None:
    state = _busy(POLICY, POLICY.start(), 0.05, 200)
    grown = state.current
    state = POLICY.on_overload(state)
    assert state.current == max(1, int(grown * 0.5))
    for _ in range(100):
        state = POLICY.on_overload(state.__class__(limit=state.limit, floors=state.floors))
    assert state.current == 1


def test_each_endpoint_is_compared_with_its_own_floor() -> None:
    # A 1000-row list page takes 100× a presign (docs/gc-api.md §10): its latency alone is no sign of queueing.
    state = _busy(POLICY, POLICY.start(), 0.05, 100, key="presign")
    grown = state.current
    state = _busy(POLICY, state, 5.0, 5, key="display-set list")
    assert state.current >= grown


def test_a_floor_measured_once_is_forgotten_after_two_windows() -> None:
    state = _busy(POLICY, POLICY.start(), 0.01, 10)  # a lucky, idle moment
    state = _busy(POLICY, state, 0.05, 120)  # the server's real speed, now
    assert state.floors["presign"] == pytest.approx(0.05)


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="minimum"):
        AimdPolicy(minimum=4, initial=2, maximum=16)


async def test_the_limiter_holds_requests_beyond_its_limit_until_a_slot_frees() -> None:
    limiter = AdaptiveLimiter(AimdPolicy(initial=3, maximum=8), clock=lambda: 0.0)
    release = anyio.Event()
    peak = 0

    async def request() -> None:
        nonlocal peak
        async with limiter.slot("presign"):
            peak = max(peak, limiter.in_flight)
            await release.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(request)
            await anyio.wait_all_tasks_blocked()  # three hold a slot, the other 17 wait for one
            assert limiter.in_flight == 3 and limiter.waiting == 17
            release.set()
    assert peak <= 8 and limiter.in_flight == 0
    assert limiter.limit > 3  # 20 answers at the floor latency with the limit in use: it grew


async def test_an_error_marked_overloaded_shrinks_the_limit_and_wakes_the_waiters() -> None:
    changes: list[int] = []
    limiter = AdaptiveLimiter(AimdPolicy(initial=4, maximum=8, backoff=0.5), on_change=changes.append)
    with pytest.raises(RuntimeError):
        async with limiter.slot("values patch") as slot:
            slot.overloaded()
            raise RuntimeError("503")
    assert limiter.limit == 2 and changes == [2] and limiter.in_flight == 0


def test_until_the_first_back_off_the_limit_grows_by_one_per_answer() -> None:
    # Slow start: a server with room is found in tens of answers, not thousands.
    state = _busy(POLICY, POLICY.start(), 0.05, 14)
    assert state.current == 16
    slowed = POLICY.on_success(state, "presign", 0.5, in_flight=state.current)
    assert not slowed.slow_start
    after = _busy(POLICY, slowed, 0.05, 3)
    assert after.current <= slowed.current + 1  # after a back-off: about one per window of the limit's size


def _one_slot_held() -> tuple[AdaptiveLimiter, anyio.Event, Callable[[], Awaitable[None]]]:
    """A limiter of one slot, and a task that holds the slot until the event is set (the others queue)."""
    limiter = AdaptiveLimiter(AimdPolicy(initial=1, minimum=1, maximum=1), clock=lambda: 0.0)
    may_finish = anyio.Event()

    async def holder() -> None:
        async with limiter.slot("presign"):
            await may_finish.wait()

    return limiter, may_finish, holder


async def test_a_queued_request_that_is_cancelled_does_not_hold_back_the_others() -> None:
    """Answers wake only as many queued requests as there are free slots; a cancelled one must not take a wake-up
    with it and leave the rest asleep beside an idle slot."""
    limiter, holder_may_finish, holder = _one_slot_held()
    served: list[int] = []

    async def queued(n: int, scope: anyio.CancelScope) -> None:
        with scope:
            async with limiter.slot("presign"):
                served.append(n)

    scopes = [anyio.CancelScope() for _ in range(4)]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            for n, scope in enumerate(scopes):
                tasks.start_soon(queued, n, scope)
            await anyio.wait_all_tasks_blocked()  # all four queued behind the holder, in order
            holder_may_finish.set()
            scopes[0].cancel()  # the first in line, cancelled as the slot frees
    assert served == [1, 2, 3] and limiter.in_flight == 0


async def test_queued_requests_are_served_in_the_order_of_their_cases_not_of_their_arrival() -> None:
    """The web workers' time goes first to the case that started first (it is the closest to handing its images
    to the importer); requests of the run itself, outside any case, go before every case's."""
    limiter, holder_may_finish, holder = _one_slot_held()
    served: list[str] = []

    async def request(name: str, rank: tuple[int, ...] | None) -> None:
        if rank is not None:
            request_rank.set(rank)
        async with limiter.slot("presign"):
            served.append(name)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(holder)
            await anyio.wait_all_tasks_blocked()
            for name, rank in [
                ("case 9", case_rank(9)),
                ("case 2", case_rank(2)),
                ("the run's", None),
                ("case 5", case_rank(5)),
                ("case 2 again", case_rank(2)),
            ]:
                tasks.start_soon(request, name, rank)
                await anyio.wait_all_tasks_blocked()  # queued: they arrive in this order
            assert limiter.waiting == 5
            holder_may_finish.set()
    assert served == ["the run's", "case 2", "case 2 again", "case 5", "case 9"]
    assert limiter.in_flight == 0 and limiter.waiting == 0

"""When to try again, and how long to wait first.

``RetryPolicy.get_delay(response_or_exception, attempt)`` is gcapi's retry seam extended to exceptions: it returns
seconds to wait, or None for "do not retry". ``call_with_retries`` runs one call under that policy, spending the
attempt budget of the item it works for (``item_budget``): a file or case gets a fixed number of retries across all
its calls, after which it fails with its last error and the rest of the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import anyio

from gcbulk.engine.gc.errors import (
    RETRYABLE_STATUSES,
    AttemptsExhausted,
    Disposition,
    HttpError,
    Interrupted,
    UploadCapReached,
    UploadQuotaReached,
    classify,
    may_have_succeeded,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: an integer (or decimal) number of seconds or an HTTP-date, clamped at 0
    (docs/gc-api.md §5, as gcapi ≥ 0.13 reads it). None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


# A retry wait at least this long is logged on "gcbulk.waits", which stays at INFO when the engine's retry chatter is
# quieted (engine/service/logs.py): no wait of minutes without a voice.
LONG_WAIT_SECONDS = 5.0
wait_log = logging.getLogger("gcbulk.waits")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient errors; special waits for server limits."""

    base_delay: float = 0.5
    max_delay: float = 60.0
    # Retries one item (a file, a case) may spend across all its calls before it fails with its last error.
    attempts_per_item: int = 10
    # docs/gc-api.md §1: gcapi documents retrying the 400 "too many uploads" after 5 minutes.
    upload_cap_delay: float = 300.0
    # docs/gc-api.md §1: the byte quota frees up as imports consume completed uploads.
    upload_quota_delay: float = 300.0
    # How often one item waits out the server's upload cap or byte quota (each wait the delay above) before its case
    # fails naming the limit: bounded, so a quota that never frees ends in minutes, not the better part of an hour
    # spent in silence; 0 fails at the first refusal (engine.server_limit_retries, GCBULK_SERVER_LIMIT_RETRIES).
    # These waits have their own allowance: they do not eat the item's budget for network faults.
    server_limit_retries: int = 3
    # Retry-After is honoured up to this; a longer one would stall the item for longer than any budget intends.
    max_retry_after: float = 900.0
    # A 429 is the server pacing us, not the item failing: throttled retries have their own, larger allowance.
    throttled_attempts_per_item: int = 100

    def backoff(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(max, base·2^attempt)], so clients that failed
        together do not come back together."""
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        return random.uniform(0, ceiling)

    def get_delay(self, outcome: Any, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt`` (0-based), or None to not retry.

        ``outcome`` is an exception or a response object with ``status`` and ``headers``.
        """
        if isinstance(outcome, BaseException):
            if classify(outcome) is not Disposition.RETRY:
                return None
            if isinstance(outcome, UploadCapReached):
                return self.upload_cap_delay
            if isinstance(outcome, UploadQuotaReached):
                return self.upload_quota_delay
            status = outcome.status if isinstance(outcome, HttpError) else None
            headers = outcome.headers if isinstance(outcome, HttpError) else {}
        else:
            status, headers = outcome.status, outcome.headers
            if status not in RETRYABLE_STATUSES:
                return None
        if status == 429:
            retry_after = parse_retry_after(_header(headers, "Retry-After"))
            if retry_after is not None:
                return min(retry_after, self.max_retry_after)
        return self.backoff(attempt)


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get(name.lower())
    return None if value is None else str(value)


DEFAULT_SERVER_LIMIT_RETRIES = RetryPolicy.server_limit_retries


class RetryBudget:
    """The retries left to one item. Shared by every call made on the item's behalf (through ``item_budget``)."""

    def __init__(
        self,
        attempts: int,
        what: str = "item",
        *,
        throttled_attempts: int = 100,
        limit_waits: int = DEFAULT_SERVER_LIMIT_RETRIES,
    ) -> None:
        self.attempts = attempts
        self.left = attempts
        self.throttled_left = throttled_attempts
        self.limit_waits = limit_waits
        self.limit_waits_left = limit_waits
        self.what = what

    def spend(self, error: BaseException) -> None:
        """Takes one retry; raises AttemptsExhausted (carrying ``error``) when none is left."""
        if isinstance(error, HttpError) and error.status == 429 and self.throttled_left > 0:
            self.throttled_left -= 1
            return
        if isinstance(error, (UploadCapReached, UploadQuotaReached)):
            if self.limit_waits_left <= 0:
                raise ServerLimitWaitsExhausted(self.what, self.limit_waits, error) from None
            self.limit_waits_left -= 1
            return
        if self.left <= 0:
            raise AttemptsExhausted(self.what, self.attempts + 1, error) from None
        self.left -= 1


class ServerLimitWaitsExhausted(AttemptsExhausted):
    """The server's upload cap or byte quota refused an item again after every wait its allowance gave it."""

    def __init__(self, what: str, waits: int, last_error: BaseException) -> None:
        limit = "byte quota" if isinstance(last_error, UploadQuotaReached) else "upload cap (2000 uploads)"
        super().__init__(what, waits + 1, last_error)
        self.args = (
            f"{what}: the server's {limit} refused it {waits + 1} time(s) (last: {last_error}); it frees as the "
            "server imports or sweeps uploads — run again later, or set engine.server_limit_retries "
            "(GCBULK_SERVER_LIMIT_RETRIES) to wait longer",
        )


_current_budget: ContextVar[RetryBudget | None] = ContextVar("gcbulk_retry_budget", default=None)
# Set by a transfer pass: once it is stopping, a retry that only sleeps in its backoff gives up at once (Interrupted)
# instead of holding the drain for the rest of its wait; everything it did is recorded, and the next run resumes.
_stopping: ContextVar[anyio.Event | None] = ContextVar("gcbulk_stopping", default=None)


@contextlib.contextmanager
def backoffs_end_on(stopping: anyio.Event) -> Iterator[None]:
    """Retry waits in this task and those it starts end with ``Interrupted`` when ``stopping`` is set."""
    token = _stopping.set(stopping)
    try:
        yield
    finally:
        _stopping.reset(token)


@contextlib.contextmanager
def item_budget(budget: RetryBudget) -> Iterator[RetryBudget]:
    """Makes ``budget`` the one spent by retries in this task and the tasks it starts (anyio copies the context)."""
    token = _current_budget.set(budget)
    try:
        yield budget
    finally:
        _current_budget.reset(token)


def current_budget(policy: RetryPolicy, what: str) -> RetryBudget:
    return _current_budget.get() or RetryBudget(
        policy.attempts_per_item,
        what,
        throttled_attempts=policy.throttled_attempts_per_item,
        limit_waits=policy.server_limit_retries,
    )


RetryObserver = Callable[[str, BaseException, float], None]


async def call_with_retries(
    operation: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    what: str,
    reconcile: Callable[[], Awaitable[T | None]] | None = None,
    on_retry: RetryObserver | None = None,
    idempotent: bool = False,
) -> T:
    """Runs ``operation`` until it succeeds, the error is not retryable, or the item's budget is spent.

    ``reconcile`` is for creates: after a failure that may have reached the server, it looks the object up; if it
    returns something, that is the result and the create is not sent again.

    A 500 is retried only when sending again cannot double anything: the request is ``idempotent`` (GET, part PUT,
    presign, list-parts; S3's ``500 InternalError`` asks for a retry) or a ``reconcile`` first looks at the server to
    see whether the first request took effect (docs/gc-api.md §1 "500 traps", §10: a concurrent duplicate title is a 500).
    """
    budget = current_budget(policy, what)
    attempt = 0
    while True:
        try:
            return await operation()
        except Exception as exc:  # cancellation is a BaseException and passes through untouched
            delay = policy.get_delay(exc, attempt)
            if delay is None and _is_500(exc) and (idempotent or reconcile is not None):
                delay = policy.backoff(attempt)
            if delay is None:
                raise
            budget.spend(exc)
            if on_retry is not None:
                on_retry(what, exc, delay)
            log.info("retrying %s in %.1f s after %s", what, delay, exc)
            if delay >= LONG_WAIT_SECONDS:  # the cap and quota waits (minutes): say what the run waits for
                wait_log.info("%s waits %.0f s before trying again: %s", what, delay, exc)
            await _backoff(delay, what)
            attempt += 1
            if reconcile is not None and may_have_succeeded(exc):
                found = await reconcile()
                if found is not None:
                    log.info("%s had succeeded before its error; adopted the existing object", what)
                    return found


async def _backoff(delay: float, what: str) -> None:
    stopping = _stopping.get()
    if stopping is None:
        await anyio.sleep(delay)
        return
    with anyio.move_on_after(delay):
        await stopping.wait()
        raise Interrupted(f"{what}: stopped while waiting {delay:.0f} s to try again")


def _is_500(exc: BaseException) -> bool:
    return isinstance(exc, HttpError) and exc.status == 500

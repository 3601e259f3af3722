"""The retry policy and error classification: pure, no network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import aiohttp
import anyio
import pytest

from gcbulk.engine.gc.errors import (
    ApiError,
    AttemptsExhausted,
    AuthenticationFailed,
    ConfigurationError,
    Disposition,
    HttpError,
    ImportFailed,
    PartIntegrityError,
    PresignedUrlExpired,
    SourceFileChanged,
    TransportError,
    UploadCapReached,
    UploadQuotaReached,
    classify,
    may_have_succeeded,
)
from gcbulk.engine.gc.retry import (
    RetryBudget,
    RetryPolicy,
    call_with_retries,
    item_budget,
    parse_retry_after,
)

FAST = RetryPolicy(base_delay=0.0, max_delay=0.0, attempts_per_item=3, upload_cap_delay=0.0, upload_quota_delay=0.0)


def api_error(status: int, body: object = None, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError("POST", "https://gc.test/api/v1/uploads/", status, body or {}, headers)


@pytest.mark.parametrize("status", [429, 502, 503, 504, 507])
def test_transient_statuses_are_retried(status: int) -> None:
    assert classify(api_error(status)) is Disposition.RETRY
    assert RetryPolicy().get_delay(api_error(status), 0) is not None


@pytest.mark.parametrize("status", [400, 403, 404, 405, 409, 500])
def test_other_statuses_fail_the_item(status: int) -> None:
    assert classify(api_error(status)) is Disposition.FAIL_ITEM
    assert RetryPolicy().get_delay(api_error(status), 0) is None


def test_bad_token_stops_the_run() -> None:
    assert classify(AuthenticationFailed("GET", "u", 401, {"detail": "Invalid token."})) is Disposition.STOP_RUN
    assert classify(ConfigurationError("bad job")) is Disposition.STOP_RUN


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("reset"),
        aiohttp.ClientPayloadError("truncated"),
        TimeoutError(),
        TransportError("GET", "u", ConnectionResetError("reset")),
        PartIntegrityError("etag"),
    ],
)
def test_network_errors_and_corrupted_parts_are_retried(exc: BaseException) -> None:
    assert classify(exc) is Disposition.RETRY
    assert RetryPolicy().get_delay(exc, 0) is not None


def test_cancellation_is_never_retried() -> None:
    async def check() -> None:
        assert classify(anyio.get_cancelled_exc_class()()) is Disposition.INTERRUPTED

    anyio.run(check)
    assert classify(KeyboardInterrupt()) is Disposition.INTERRUPTED


@pytest.mark.parametrize(
    "exc", [SourceFileChanged("changed"), ImportFailed("bad image"), PresignedUrlExpired("PUT", "u", 403, "")]
)
def test_item_errors_fail_only_the_item(exc: BaseException) -> None:
    assert classify(exc) is Disposition.FAIL_ITEM


def test_retry_after_seconds_is_honoured() -> None:
    error = api_error(429, headers={"Retry-After": "7"})
    assert RetryPolicy().get_delay(error, 5) == 7.0


def test_retry_after_http_date_is_honoured() -> None:
    now = datetime(2025, 11, 14, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0


def test_unreadable_retry_after_falls_back_to_backoff() -> None:
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-3") == 0.0
    delay = RetryPolicy(base_delay=1, max_delay=1).get_delay(api_error(429, headers={"Retry-After": "soon"}), 0)
    assert delay is not None and 0 <= delay <= 1


def test_retry_after_is_clamped() -> None:
    error = api_error(429, headers={"Retry-After": "86400"})
    assert RetryPolicy(max_retry_after=60).get_delay(error, 0) == 60


def test_response_objects_are_judged_like_errors() -> None:
    policy = RetryPolicy()
    assert policy.get_delay(SimpleNamespace(status=429, headers={"Retry-After": "2"}), 0) == 2.0
    assert policy.get_delay(SimpleNamespace(status=200, headers={}), 0) is None
    assert policy.get_delay(SimpleNamespace(status=400, headers={}), 0) is None
    assert policy.get_delay(SimpleNamespace(status=503, headers={}), 0) is not None


def test_backoff_grows_exponentially_within_the_ceiling() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    for attempt in range(10):
        ceiling = min(8.0, 2.0**attempt)
        assert all(0 <= policy.backoff(attempt) <= ceiling for _ in range(50))


def test_upload_cap_and_quota_wait_their_configured_delay() -> None:
    policy = RetryPolicy(upload_cap_delay=300, upload_quota_delay=120)
    body = {"non_field_errors": ["You have created too many uploads. Please try again later."]}
    assert policy.get_delay(UploadCapReached("POST", "u", 400, body), 0) == 300
    assert policy.get_delay(UploadQuotaReached("PATCH", "u", 403, {"detail": "Upload limit reached"}), 3) == 120


def test_creates_that_may_have_succeeded_are_recognised() -> None:
    assert may_have_succeeded(TransportError("POST", "u", ConnectionResetError()))
    assert may_have_succeeded(api_error(502))
    assert not may_have_succeeded(api_error(429))
    assert not may_have_succeeded(api_error(400))


async def test_a_transient_error_is_retried_until_success() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise api_error(503)
        return "ok"

    retries = []
    result = await call_with_retries(flaky, policy=FAST, what="flaky", on_retry=lambda *a: retries.append(a))
    assert result == "ok" and len(calls) == 3 and len(retries) == 2


async def test_the_item_fails_with_its_last_error_when_its_budget_is_spent() -> None:
    async def always_down() -> None:
        raise api_error(502, {"detail": "bad gateway"})

    with pytest.raises(AttemptsExhausted) as caught:
        await call_with_retries(always_down, policy=FAST, what="POST uploads/")
    assert "after 4 attempts" in str(caught.value) and "502" in str(caught.value)
    assert isinstance(caught.value.last_error, HttpError)


async def test_the_budget_is_shared_by_all_calls_of_one_item() -> None:
    budget = RetryBudget(2, "case-1")

    async def failing_once_each() -> str:
        failing_once_each.calls += 1
        if failing_once_each.calls % 2:
            raise api_error(503)
        return "ok"

    failing_once_each.calls = 0
    with item_budget(budget):
        await call_with_retries(failing_once_each, policy=FAST, what="a")
        await call_with_retries(failing_once_each, policy=FAST, what="b")
        assert budget.left == 0
        with pytest.raises(AttemptsExhausted, match="case-1"):
            await call_with_retries(failing_once_each, policy=FAST, what="c")


async def test_a_permanent_error_is_raised_at_once() -> None:
    calls = []

    async def bad_request() -> None:
        calls.append(1)
        raise api_error(400, {"filename": ["x/y is not a valid filename"]})

    with pytest.raises(ApiError, match="not a valid filename"):
        await call_with_retries(bad_request, policy=FAST, what="create")
    assert len(calls) == 1


async def test_a_create_that_may_have_succeeded_is_looked_up_before_it_is_sent_again() -> None:
    sent = []

    async def create() -> str:
        sent.append(1)
        raise TransportError("POST", "u", ConnectionResetError("reset after sending"))

    async def lookup() -> str | None:
        return "existing"

    assert await call_with_retries(create, policy=FAST, what="create", reconcile=lookup) == "existing"
    assert len(sent) == 1


async def test_a_create_is_sent_again_when_the_lookup_finds_nothing() -> None:
    sent = []

    async def create() -> str:
        sent.append(1)
        if len(sent) == 1:
            raise api_error(504)
        return "created"

    async def lookup() -> None:
        return None

    assert await call_with_retries(create, policy=FAST, what="create", reconcile=lookup) == "created"
    assert len(sent) == 2

"""Every error the engine can meet, and what each one means for the run: retry, fail this item, or stop the run.

``classify`` is the one place that decides (rclone's ``fserrors.ShouldRetry``): callers never inspect status codes
themselves. Errors are classified by structure (status, endpoint, body keys), never by message text. No error
carries the API token: messages hold the method, the URL (tokens travel only in the Authorization header) and the
server's DRF body.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from typing import Any

import aiohttp
import anyio

from gcbulk.exit_codes import EXIT_CONFIG_ERROR, EXIT_SOME_FAILED
from gcbulk.redaction import redact, redact_text

# The body of an error is shown to the user; a huge HTML page from a proxy should not flood the log.
_BODY_PREVIEW_CHARS = 500


class Disposition(enum.Enum):
    RETRY = "retry"  # transient: wait and try again, within the item's attempt budget
    FAIL_ITEM = "fail-item"  # this file or case cannot succeed as it is; the rest of the run continues
    STOP_RUN = "stop-run"  # nothing can succeed (bad token, interrupted): stop starting work
    INTERRUPTED = "interrupted"  # cancelled by the user or a deadline; never retried, never a failure


class GcbulkError(Exception):
    """Base of the engine's own errors. ``exit_code``: what the ``gcbulk`` command exits with when this stops it
    (``gcbulk/exit_codes.py``), so a script calling the Python API can exit as the command would."""

    exit_code: int = EXIT_SOME_FAILED


class ConfigurationError(GcbulkError):
    """Bad input from the user (job file, URL, token); the message says what to fix. Exit code 2."""

    exit_code = EXIT_CONFIG_ERROR


class UnsafeUrlError(ConfigurationError):
    """A URL the client must not follow with the token (another host, or not https)."""


class TransportError(GcbulkError):
    """The request failed below HTTP: refused, reset, timed out, truncated. It may or may not have reached the
    server, so a create that failed this way is reconciled before it is retried."""

    def __init__(self, method: str, url: str, cause: BaseException) -> None:
        self.method = method
        self.url = url
        self.cause_type = type(cause).__name__
        # Scrubbed: a hostile server's words can reach the message through the cause (an SSL or proxy error text).
        super().__init__(redact_text(f"{method} {url} failed: {self.cause_type}: {cause}"))


class TlsVerificationFailed(ConfigurationError):
    """The server's certificate did not verify. Waiting does not fix that, a person must (exit 2): a private CA is
    trusted through ``ca_file`` (job file) or ``GCBULK_CA_FILE``."""

    def __init__(self, method: str, url: str, cause: BaseException) -> None:
        self.method = method
        self.url = url
        super().__init__(
            redact_text(
                f"{method} {url}: the server's TLS certificate did not verify ({cause}). If the server uses a private "
                "certificate authority, set ca_file in the job file (or GCBULK_CA_FILE, or --ca-file) to its PEM file; "
                "it is added to the system's trusted authorities"
            )
        )


class ResponseTooLarge(GcbulkError):
    """An answer larger than gcbulk accepts (an API body past its cap, a download past its announced or maximum
    size): a misbehaving server or proxy; the item fails rather than filling memory or the disk."""


class UnexpectedResponse(GcbulkError):
    """An answer of a shape the API never sends (a list or text where an object belongs)."""


def transport_error(method: str, url: str, cause: BaseException) -> GcbulkError:
    """The engine's error for a request that failed below HTTP: a certificate that did not verify is a
    configuration error (never retried, exit 2); anything else is a retryable :class:`TransportError`."""
    if isinstance(cause, (aiohttp.ClientConnectorCertificateError, ssl.SSLCertVerificationError)):
        return TlsVerificationFailed(method, url, cause)
    return TransportError(method, url, cause)


class HttpError(GcbulkError):
    """The server answered with an error status."""

    def __init__(self, method: str, url: str, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.method = method
        self.url = url
        self.status = status
        # The body and headers are server text: scrubbed here too, whoever built the error (S3 answers as well).
        self.body = redact(body)
        self.headers = redact(dict(headers or {}))
        preview = str(self.body)
        if len(preview) > _BODY_PREVIEW_CHARS:
            preview = preview[:_BODY_PREVIEW_CHARS] + "…"
        super().__init__(f"{method} {url} answered {status}: {preview}")


class ApiError(HttpError):
    """An error answer from the Grand Challenge API; ``body`` is DRF's JSON error (docs/gc-api.md §0)."""


class AuthenticationFailed(ApiError):
    """401: the token is wrong or expired. Every further call would fail the same way."""

    exit_code = EXIT_CONFIG_ERROR


TOKEN_REFUSED = (
    "the server refused the API token (401); set a valid token in $GRAND_CHALLENGE_AUTHORIZATION, "
    "$GCBULK_TOKEN_FILE or --token-file"
)


def server_unreachable(error: BaseException) -> bool:
    """Whether ``error`` means no answer came from the server at all (every attempt failed below HTTP)."""
    if isinstance(error, AttemptsExhausted):
        return server_unreachable(error.last_error)
    return isinstance(error, TransportError)


def diagnosis(error: BaseException) -> str:
    """What stopped a command, said the same way by every command and by follow mode: the cause and what to do."""
    if isinstance(error, AuthenticationFailed):
        return TOKEN_REFUSED
    if server_unreachable(error):
        return f"the server did not answer ({error}); check the server address and the network, then run it again"
    return str(error)


class NotFound(ApiError):
    """404: the object does not exist or is not visible to this user (docs/gc-api.md §0: invisible objects are 404)."""


class UploadCapReached(ApiError):
    """docs/gc-api.md §1: more than 2000 uploads exist for this user; gcapi says retry after 5 minutes."""


class UploadQuotaReached(ApiError):
    """docs/gc-api.md §1: presigning would exceed the byte quota (2 / 128 GiB); space frees as imports consume uploads."""


class S3Error(HttpError):
    """An error answer from the object store to a presigned part PUT."""


class PresignedUrlExpired(S3Error):
    """403 from S3: the presigned URL expired (docs/gc-api.md §1: 3600 s) or was rejected; re-sign and PUT again."""


class MultipartUploadVanished(GcbulkError):
    """The multipart upload is gone on the server (the 24 h sweep, docs/gc-api.md §1); it must be created again."""


class UploadsSwept(GcbulkError):
    """The server refused to import an item's uploads because they are gone — the 24 h sweep (docs/gc-api.md §1)
    deleted them after they were completed, before or while their session used them. The item is uploaded again."""

    def __init__(self, item_id: int, message: str) -> None:
        super().__init__(message)
        self.item_id = item_id


class PartIntegrityError(GcbulkError):
    """S3 stored different bytes than we sent (ETag is not the MD5 of the part); PUT the part again."""


class SourceFileChanged(GcbulkError):
    """The local file no longer matches the plan (size or content changed); re-plan before uploading it."""


class ImportFailed(GcbulkError):
    """Grand Challenge could not import a value; the message is the upload session's ``error_message``."""


class Interrupted(GcbulkError):
    """The run is stopping (a signal): the work was left where it was, to be resumed; it did not fail."""


class UploadNoLongerOpen(GcbulkError):
    """The server shows the upload as no longer Initialized (Completed or Aborted): its parts cannot be listed."""

    def __init__(self, pk: str, status: str) -> None:
        super().__init__(f"upload {pk} is {status!r} on the server, no longer open for parts")
        self.pk = pk
        self.status = status


class ForeignDisplaySet(GcbulkError):
    """A display set with the case's title exists and was not made by this job: the case is not run into it."""


class AttemptsExhausted(GcbulkError):
    """The item's attempt budget is spent; the item fails with ``last_error``."""

    def __init__(self, what: str, attempts: int, last_error: BaseException) -> None:
        self.last_error = last_error
        super().__init__(redact_text(f"{what}: gave up after {attempts} attempts; last error: {last_error}"))


# docs/gc-api.md §5: gcapi ≥ 0.13 retries 429, 502, 503, 504, 507. 500 is not in the list: on GC it means an unhandled
# model or S3 error (docs/gc-api.md §1 "500 traps"), which repeats; the caller reconciles instead (e.g. a complete that
# already happened).
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504, 507})

_NETWORK_ERRORS = (
    aiohttp.ClientConnectionError,  # includes ServerDisconnectedError, ClientOSError, connection timeouts
    aiohttp.ClientPayloadError,
    TimeoutError,
)


def is_network_error(exc: BaseException) -> bool:
    return isinstance(exc, _NETWORK_ERRORS)


def _is_anyio_cancellation(exc: BaseException) -> bool:
    try:
        return isinstance(exc, anyio.get_cancelled_exc_class())
    except RuntimeError:  # outside an event loop (anyio.NoEventLoopError): only asyncio's class applies
        return False


def classify(exc: BaseException) -> Disposition:
    """What ``exc`` means for the run. Cancellation is checked first, so an interrupted run is never retried."""
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)) or _is_anyio_cancellation(exc):
        return Disposition.INTERRUPTED
    if isinstance(exc, Interrupted):
        return Disposition.INTERRUPTED
    if isinstance(exc, AttemptsExhausted):
        return Disposition.FAIL_ITEM
    if isinstance(exc, AuthenticationFailed):
        return Disposition.STOP_RUN
    if isinstance(exc, ConfigurationError):
        return Disposition.STOP_RUN
    if isinstance(exc, (TransportError, PartIntegrityError, UploadCapReached, UploadQuotaReached)):
        return Disposition.RETRY
    if isinstance(exc, PresignedUrlExpired):
        # Waiting does not help an expired URL; ``engine/upload/s3_parts.py`` re-signs the part instead.
        return Disposition.FAIL_ITEM
    if isinstance(exc, HttpError):
        return Disposition.RETRY if exc.status in RETRYABLE_STATUSES else Disposition.FAIL_ITEM
    if is_network_error(exc):
        return Disposition.RETRY
    return Disposition.FAIL_ITEM


def first_error(exc: BaseException) -> BaseException:
    """The error that matters in what a task group raised: anyio wraps child errors in an ExceptionGroup, where
    siblings cancelled because of the first failure appear beside it."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    ranked = sorted(
        leaves,
        key=lambda e: {
            Disposition.STOP_RUN: 0,
            Disposition.FAIL_ITEM: 1,
            Disposition.RETRY: 1,
            Disposition.INTERRUPTED: 2,
        }[classify(e)],
    )
    return ranked[0] if ranked else exc


def may_have_succeeded(exc: BaseException) -> bool:
    """True when a create may have happened although the call failed: the request may have reached the server
    (network error after sending) or the server may have failed after acting (a 5xx from a proxy). A create must then
    be reconciled (looked up) before it is sent again, or it may be duplicated (docs/gc-api.md §5)."""
    if isinstance(exc, TransportError) or is_network_error(exc):
        return True
    return isinstance(exc, HttpError) and exc.status >= 500

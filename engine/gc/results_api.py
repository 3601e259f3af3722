"""The results side of the Grand Challenge API (docs/gc-api.md §3, §4, §12): questions, answers, archive items, images,
image files, order.

A mixin of ``GrandChallengeClient`` (``engine/gc/client.py``), like ``engine/gc/uploads_api.py``. It reads only the fields it
uses, so it works with the current schema (docs/gc-api.md §8) and the older server (docs/gc-api.md §9).

Image files take two hops (docs/gc-api.md §4, §9): ``GET <file URL>`` on the API host *with* the token answers 302 to a
signed object-store URL that expires after about 300 s; that URL is fetched *without* the token (another origin:
the token must never leave the API host) and supports HTTP Range, which is what makes a cut download resumable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from gcbulk.engine.gc.bounded import is_loopback_url, read_capped
from gcbulk.engine.gc.deadlines import api_timeout
from gcbulk.engine.gc.errors import (
    ApiError,
    AuthenticationFailed,
    ConfigurationError,
    NotFound,
    PresignedUrlExpired,
    S3Error,
    UnsafeUrlError,
    is_network_error,
    transport_error,
)
from gcbulk.engine.gc.pacer import AdaptiveLimiter
from gcbulk.engine.gc.retry import RetryObserver, RetryPolicy, call_with_retries

ANSWERS = "reader-studies/answers/"
ARCHIVES = "archives/"
ARCHIVE_ITEMS = "archives/items/"
# A redirect or an error from the object store is a few hundred bytes; more is not read (issue 14: bounded input).
_ERROR_BODY_BYTES = 1024 * 1024
MY_ANSWERS = "reader-studies/answers/mine/"


class SignedUrlRefused(S3Error):
    """The object store refused a signed download URL for a reason other than expiry (e.g. the object is gone)."""


def _bool_param(value: bool) -> str:
    # django-filter's BooleanWidget reads "true"/"false" (docs/gc-api.md §4); aiohttp refuses bool query values anyway.
    return "true" if value else "false"


class ResultsMixin:
    """Needs from the core: ``request``, ``iterate_all``, ``url_for``, ``session``, ``retry_policy``, ``on_retry``,
    ``api_limiter`` and the client's Authorization header (``_auth_headers``), each declared below; holds nothing of
    its own."""

    request: Callable[..., Awaitable[Any]]
    iterate_all: Callable[..., AsyncIterator[dict[str, Any]]]
    url_for: Callable[[str], str]
    base_url: str
    retry_policy: RetryPolicy
    on_retry: RetryObserver | None
    api_limiter: AdaptiveLimiter
    request_deadline: float
    _auth_headers: Callable[[], dict[str, str]]

    if TYPE_CHECKING:  # the client's read-only property (a plain annotation would declare it writable)

        @property
        def session(self) -> aiohttp.ClientSession: ...

    # ---- questions and answers ----------------------------------------------------------------------------------

    async def iterate_questions(self, reader_study_pk: str) -> AsyncIterator[dict[str, Any]]:
        """The study's questions in the server's order (``reader-studies/questions/?reader_study=<pk>``)."""
        async for question in self.iterate_all("reader-studies/questions/", {"reader_study": reader_study_pk}):
            yield question

    async def iterate_answers(
        self,
        reader_study_pk: str,
        *,
        mine: bool = False,
        display_set_pk: str | None = None,
        creator: str | None = None,
        is_ground_truth: bool | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every answer of the study this user may see, page by page (docs/gc-api.md §4): all of them for an editor,
        one's own for a reader; ``mine`` asks ``answers/mine/`` (one's own, never ground truth)."""
        params: dict[str, Any] = {"question__reader_study": reader_study_pk}
        if display_set_pk is not None:
            params["display_set"] = display_set_pk
        if creator is not None:
            params["creator"] = creator
        if is_ground_truth is not None:
            params["is_ground_truth"] = _bool_param(is_ground_truth)
        extra = {} if page_size is None else {"page_size": page_size}
        async for answer in self.iterate_all(MY_ANSWERS if mine else ANSWERS, params, **extra):
            yield answer

    # ---- display-set order ----------------------------------------------------------------------------------------

    async def set_display_set_order(self, pk: str, order: int) -> dict[str, Any]:
        """``PATCH reader-studies/display-sets/{pk}/ {"order": n}``; the answer is the post serializer's shape."""
        answer: dict[str, Any] = await self.request(
            "PATCH", f"reader-studies/display-sets/{pk}/", json={"order": order}, idempotent=True
        )  # the same order twice is the same display set
        return answer

    # ---- archives (docs/gc-api.md §12): the export's source -------------------------------------------------------

    async def archive_by_slug(self, slug: str) -> dict[str, Any]:
        """``GET archives/?slug=``: the archive, or ConfigurationError when this user may not view it (§12: the list
        shows only the archives of which the user is an editor, uploader or user)."""
        page = await self.request("GET", ARCHIVES, params={"slug": slug})
        results = page.get("results", [])
        if not results:
            raise ConfigurationError(
                f"archive {slug!r} was not found at {self.base_url}: check the slug (the last part of its URL) and "
                "that this token's user is a member of the archive (editor, uploader or user)"
            )
        return dict(results[0])

    async def iterate_archive_items(self, archive_pk: str) -> AsyncIterator[dict[str, Any]]:
        """Every item of the archive, each value with its full socket (``archives/items/?archive=<pk>``, §12)."""
        async for item in self.iterate_all(ARCHIVE_ITEMS, {"archive": archive_pk}):
            yield item

    # ---- images and their files -----------------------------------------------------------------------------------

    async def get_image(self, pk_or_url: str) -> dict[str, Any]:
        """``GET cases/images/{pk}/`` (an answer's ``answer_image`` URL works as well)."""
        target = pk_or_url if "/" in pk_or_url else f"cases/images/{pk_or_url}/"
        image: dict[str, Any] = await self.request("GET", target)
        return image

    async def resolve_image_file(self, file_url: str) -> str:
        """The signed object-store URL behind an image file URL: ``GET`` it on the API host with the token and read
        the 302's ``Location`` (docs/gc-api.md §4). Raises NotFound (unknown image), ApiError 403 (no view permission).
        Retried like any API call."""
        url = self.url_for(file_url)

        async def attempt() -> str:
            async with self.api_limiter.slot("GET media"):
                try:
                    async with self.session.get(
                        url,
                        headers=self._auth_headers(),
                        allow_redirects=False,
                        timeout=api_timeout(self.request_deadline),
                    ) as response:
                        body = await read_capped(response, _ERROR_BODY_BYTES, f"GET {url}")
                        status, headers = response.status, dict(response.headers)
                except Exception as exc:
                    if is_network_error(exc):
                        raise transport_error("GET", url, exc) from None
                    raise
            if status in (301, 302, 303, 307, 308) and headers.get("Location"):
                return self._checked_redirect(url, headers["Location"])
            text = body.decode(errors="replace")
            if status < 300:
                raise ApiError("GET", url, status, f"expected a redirect to the file, got {status}: {text[:200]}")
            error_type = {401: AuthenticationFailed, 404: NotFound}.get(status, ApiError)
            raise error_type("GET", url, status, text, headers)

        return await call_with_retries(
            attempt,
            policy=self.retry_policy,
            what=f"GET {urlsplit(url).path}",
            on_retry=self.on_retry,
        )

    def _checked_redirect(self, from_url: str, location: str) -> str:
        """The signed URL a file redirect names, if gcbulk may fetch it: https only (the signature grants access to
        the file); plain http only while the API itself is on this machine (the emulator, tests). Any other scheme
        (``file:``, ``ftp:``, ``data:``) is refused."""
        target = urljoin(from_url, location)
        parts = urlsplit(target)
        api_on_loopback = is_loopback_url(self.base_url)
        if parts.scheme == "https" or (parts.scheme == "http" and api_on_loopback):
            if parts.hostname:
                return target
        allowed = "https (or http while the API is on this machine)" if api_on_loopback else "https"
        raise UnsafeUrlError(
            f"the file redirect from {_without_query(from_url)} goes to {parts.scheme or 'a relative'}: URL "
            f"{_without_query(target)!r}; only {allowed} object-store URLs are followed"
        )

    @asynccontextmanager
    async def open_signed_download(self, signed_url: str, *, start: int = 0) -> AsyncIterator[aiohttp.ClientResponse]:
        """An open response for the signed URL, asking for the bytes from ``start`` on (HTTP Range), sent with no
        Authorization header. The caller streams ``response.content`` and checks ``status`` (200: the whole object,
        206: the asked range; a 416 means ``start`` is at or past the end). Raises PresignedUrlExpired on 403
        (re-resolve the file URL), SignedUrlRefused / S3Error otherwise, TransportError on network errors."""
        headers = {"Range": f"bytes={start}-"} if start > 0 else {}
        try:
            async with self.session.get(signed_url, headers=headers, allow_redirects=False) as response:
                if response.status in (200, 206, 416):
                    yield response
                    return
                text = (await read_capped(response, _ERROR_BODY_BYTES, "GET signed URL")).decode(errors="replace")
                status, resp_headers = response.status, dict(response.headers)
        except Exception as exc:
            if is_network_error(exc):
                raise transport_error("GET", _without_query(signed_url), exc) from None
            raise
        where = _without_query(signed_url)  # the signature stays out of messages and logs
        if status == 403:
            raise PresignedUrlExpired("GET", where, status, text, resp_headers)
        error_type = S3Error if status >= 500 or status == 429 else SignedUrlRefused
        raise error_type("GET", where, status, text, resp_headers)


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"

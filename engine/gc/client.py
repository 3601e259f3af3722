"""The only place that speaks the Grand Challenge REST API (docs/gc-api.md §0–§3). Method names follow the endpoints and gcapi.

One ``GrandChallengeClient`` holds one ``aiohttp.ClientSession`` (a pooled connector shared with the presigned S3 PUTs
of ``engine/upload/s3_parts.py``), bounds the API calls in flight, and retries through ``engine/gc/retry.py``. It reads only
the response fields it uses, so it works with the current schema (docs/gc-api.md §8) and the older server (docs/gc-api.md §9)
alike. The token travels only in the Authorization header of requests to the API host; it is never part of a URL,
a log line, an exception or the repr.

The core (``request``, ``iterate_all``) is shared with the upload calls in ``engine/gc/uploads_api.py`` and with the
results side, which adds its read methods on top.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import anyio

from gcbulk.engine.gc.bounded import DEFAULT_MAX_RESPONSE_BYTES, is_loopback_host, read_capped, trust_context
from gcbulk.engine.gc.deadlines import (
    API_DEADLINE_SECONDS,
    VOICE_AFTER_SECONDS,
    DeadlinePassed,
    api_timeout,
    voiced,
)
from gcbulk.engine.gc.display_set_create import create_display_set
from gcbulk.engine.gc.errors import (
    ApiError,
    AuthenticationFailed,
    ConfigurationError,
    Disposition,
    GcbulkError,
    NotFound,
    UnexpectedResponse,
    UnsafeUrlError,
    classify,
    is_network_error,
    transport_error,
)
from gcbulk.engine.gc.pacer import AdaptiveLimiter, api_policy
from gcbulk.engine.gc.results_api import ResultsMixin
from gcbulk.engine.gc.retry import RetryObserver, RetryPolicy, call_with_retries
from gcbulk.engine.gc.routes import route_shape
from gcbulk.engine.gc.uploads_api import UploadsMixin
from gcbulk.redaction import redact_bytes, register_secret

log = logging.getLogger(__name__)

# docs/gc-api.md §0: DRF pages are clipped at 1000; fewer, larger pages mean fewer round trips when scanning a study.
DEFAULT_PAGE_SIZE = 1000
# Answers that say the server (or what stands in front of it) is saturated: the adaptive limit backs off at once.
# The API itself never sends 429 (docs/gc-api.md §10); a proxy in front of it may, and 503/504 come from there too.
OVERLOADED_STATUSES = (429, 503, 504)


def normalise_token(token: str) -> str:
    """gcapi accepts ``tok`` or ``Bearer tok`` and keeps the last word (docs/gc-api.md §0)."""
    words = token.split()
    if not words:
        raise ConfigurationError("the API token is empty; set GRAND_CHALLENGE_AUTHORIZATION or the job's token file")
    return words[-1]


def socket_slug_of(value: dict[str, Any]) -> str | None:
    """The socket slug of a display-set value: GET shows the socket object, POST/PATCH responses its slug (§3)."""
    interface = value.get("interface")
    if isinstance(interface, dict):
        return interface.get("slug")
    return interface


def display_set_title(display_set: Mapping[str, Any]) -> str | None:
    """``title`` where the server sends it, else ``title_safe`` unescaped (docs/gc-api.md §8: the GET has only the latter)."""
    if display_set.get("title") is not None:
        return str(display_set["title"])
    safe = display_set.get("title_safe")
    return html.unescape(safe) if safe is not None else None


# A relative API path of plain segments ("reader-studies/display-sets/<pk>/"): no scheme, host, leading '/', dot
# segment, query or fragment, so joining it to the base URL is a concatenation.
_PLAIN_RELATIVE_PATH = re.compile(r"(?:[A-Za-z0-9_~-]+/)*[A-Za-z0-9_~-]*")


class GrandChallengeClient(UploadsMixin, ResultsMixin):
    """An async client for one Grand Challenge API root, used as ``async with GrandChallengeClient(...) as gc``."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        ca_file: Path | str | None = None,
        api_calls_in_flight: int = 16,
        adaptive_concurrency: bool = True,
        connections: int = 128,
        retry_policy: RetryPolicy | None = None,
        on_retry: RetryObserver | None = None,
        request_timeout: float = 300.0,
        request_deadline: float = API_DEADLINE_SECONDS,
        voice_after: float = VOICE_AFTER_SECONDS,
        trace_configs: list[aiohttp.TraceConfig] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        parts = urlsplit(base_url)
        if not base_url.endswith("/"):
            raise ConfigurationError(
                f"base URL {base_url!r} must end in '/' (e.g. https://grand-challenge.org/api/v1/)"
            )
        # docs/gc-api.md §5: gcapi insists on https; plain http is allowed only to a server on this machine (tests).
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(parts.hostname)):
            raise ConfigurationError(f"base URL {base_url!r} must use https")
        self.base_url = base_url
        self._origin = (parts.scheme, parts.netloc)
        self.__token = normalise_token(token)
        # Registered before the first request: every response body is scrubbed of it on arrival (_request_once).
        register_secret(self.__token)
        self._ca_file = Path(ca_file) if ca_file else None
        self._ssl_context = trust_context(self._ca_file)
        # docs/gc-api.md §0 pages of 1000 rows stay far below this; a larger answer is a misbehaving server or proxy, and
        # reading it whole would take the process's memory with it (issue 14: 400 MiB of JSON took ~2 GB of RSS).
        self.max_response_bytes = max_response_bytes
        self._connections = connections
        # The session's default, for what has no deadline of its own (a download streamed to disk): no read may stall
        # longer than this. API requests and part PUTs have overall deadlines too (engine/gc/deadlines.py).
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=request_timeout)
        self.request_deadline = request_deadline
        self.voice_after = voice_after
        self.retry_policy = retry_policy or RetryPolicy()
        self.on_retry = on_retry
        # API requests the server answered (any status): the run's cost to the server, in its run_finished event.
        self.requests_answered = 0
        # Adaptive (engine/gc/pacer.py): the server's few web workers, not this knob, bound what helps
        # (docs/gc-api.md §10: beyond them requests only queue and throughput falls); the knob is the upper bound.
        self.api_limiter = AdaptiveLimiter(api_policy(api_calls_in_flight, adaptive=adaptive_concurrency))
        self._api_path = parts.path
        self._session: aiohttp.ClientSession | None = None
        # Observers of every request (engine/service/metrics.py measures latency with them); the request code stays as it is.
        self._trace_configs = list(trace_configs or [])
        self._reader_studies: dict[str, dict[str, Any]] = {}
        self._sockets: dict[str, dict[str, Any] | None] = {}
        self._lookups = anyio.Lock()

    def __repr__(self) -> str:
        return f"GrandChallengeClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> GrandChallengeClient:
        connector = aiohttp.TCPConnector(ssl=self._ssl_context, limit=self._connections, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, trace_configs=self._trace_configs or None
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session, also used for presigned S3 PUTs (which must carry no Authorization header)."""
        if self._session is None:
            raise RuntimeError("use the client as 'async with GrandChallengeClient(...) as client'")
        return self._session

    # ---- core: one request, retries, pagination -------------------------------------------------------------

    def endpoint_key(self, method: str, url: str) -> str:
        """``"PATCH reader-studies/display-sets/{id}/"``: requests the adaptive limiter compares with each other."""
        return self._endpoint_key_of_path(method, urlsplit(url).path)

    def _endpoint_key_of_path(self, method: str, path: str) -> str:
        relative = path[len(self._api_path) :] if path.startswith(self._api_path) else path
        return f"{method} {route_shape(relative)}"

    def url_for(self, path_or_url: str) -> str:
        """An absolute URL on the API host. Absolute URLs from the server must be on that host: the token is sent
        with them (docs/gc-api.md §5: gcapi refuses any other netloc, for the same reason)."""
        if _PLAIN_RELATIVE_PATH.fullmatch(path_or_url):
            # What urljoin gives for a path of plain segments under a base that ends in '/' (checked in __init__),
            # without its parse of both: each request's URL is new (a pk in it), so urllib's cache never helps, and
            # the two parses were ~3 % of a tutorial run's client CPU (benchmarks/README.md, "Client CPU").
            return self.base_url + path_or_url
        url = urljoin(self.base_url, path_or_url)
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != self._origin:
            raise UnsafeUrlError(f"refusing to send the API token to {parts.scheme}://{parts.netloc}: not the API host")
        return url

    def _auth_headers(self) -> dict[str, str]:
        """The Authorization header, for requests to the API host only (``url_for`` checks the host)."""
        return {"Authorization": f"Bearer {self.__token}"}

    async def _request_once(self, method: str, url: str, payload: Any, params: dict[str, Any] | None) -> Any:
        headers = {**self._auth_headers(), "Accept": "application/json"}
        path = urlsplit(url).path  # split once: the request's name in messages and its pacer's key
        what = f"{method} {path}"
        async with self.api_limiter.slot(self._endpoint_key_of_path(method, path)) as slot:
            try:
                # No redirects (docs/gc-api.md §0: gcapi treats a 3xx as an error): the token must not follow one.
                with voiced(what, self.request_deadline, after=self.voice_after):
                    async with self.session.request(
                        method,
                        url,
                        json=payload,
                        params=params,
                        headers=headers,
                        allow_redirects=False,
                        timeout=api_timeout(self.request_deadline),
                    ) as resp:
                        raw = await read_capped(resp, self.max_response_bytes, f"{method} {url}")
                        status, content_type, resp_headers = resp.status, resp.content_type, dict(resp.headers)
                        self.requests_answered += 1
            except Exception as exc:
                if isinstance(exc, TimeoutError):
                    slot.overloaded()
                    if not isinstance(exc, aiohttp.ServerTimeoutError):  # not a connect timeout: the whole deadline
                        exc = DeadlinePassed(what, self.request_deadline)
                if is_network_error(exc):
                    # Chained from None: aiohttp exceptions may carry the request headers, hence the token.
                    raise transport_error(method, url, exc) from None
                raise
            if status in OVERLOADED_STATUSES:
                slot.overloaded()
            elif status >= 400:  # about the request, not the server's load: its latency says nothing
                slot.ignore()
        # A server may echo the Authorization header into any answer (issue 14): nothing it sends reaches the engine,
        # hence the ledger, events, reports or the terminal, with the token in it.
        raw = redact_bytes(raw)
        body: Any = raw.decode(errors="replace")
        if content_type == "application/json" and raw:
            try:
                body = json.loads(raw)
            except ValueError:
                pass
        if status >= 300:
            error_type = {401: AuthenticationFailed, 404: NotFound}.get(status, ApiError)
            raise error_type(method, url, status, body, resp_headers)
        if raw and not isinstance(body, dict):
            # Every successful API answer is a JSON object (docs/gc-api.md §0); a list, or text (an HTML login page from
            # a proxy), would otherwise fail later as an AttributeError far from its cause.
            shape = type(body).__name__ if content_type == "application/json" else f"{content_type or 'untyped'} text"
            raise UnexpectedResponse(
                f"{method} {url} answered {status} with a {shape} where a JSON object was expected; check that "
                f"base_url ({self.base_url}) is the Grand Challenge API root and nothing in between rewrites answers"
            )
        return body if raw else None

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        reconcile: Callable[[], Awaitable[Any]] | None = None,
        translate: Callable[[ApiError], Exception | None] | None = None,
        idempotent: bool | None = None,
        retries: bool = True,
    ) -> Any:
        """One API call with retries. ``translate`` maps an endpoint's error to its typed meaning (e.g. the upload
        cap); ``reconcile`` looks a create up after a failure that may have reached the server. ``idempotent``
        (default: GET only) lets a 500 be retried: sending it again cannot double anything. ``retries=False`` sends
        once: for a request the caller retries itself after looking at the server."""
        url = self.url_for(path_or_url)

        async def attempt() -> Any:
            try:
                return await self._request_once(method, url, json, params)
            except ApiError as error:
                better = translate(error) if translate else None
                if better is not None:
                    raise better from None
                raise

        if not retries:
            return await attempt()
        return await call_with_retries(
            attempt,
            policy=self.retry_policy,
            what=f"{method} {urlsplit(url).path}",
            reconcile=reconcile,
            on_retry=self.on_retry,
            idempotent=method == "GET" if idempotent is None else idempotent,
        )

    async def iterate_all(
        self, path: str, params: dict[str, Any] | None = None, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every result of a limit/offset list (docs/gc-api.md §0): follows ``next`` when the server sends it, else asks
        for the next offset until a short or empty page."""
        query: dict[str, Any] | None = {**(params or {}), "limit": page_size, "offset": 0}
        url = path
        while True:
            page = await self.request("GET", url, params=query)
            results = page.get("results", [])
            if not isinstance(results, list) or not all(isinstance(item, dict) for item in results):
                raise UnexpectedResponse(
                    f"GET {url}: 'results' is not a list of objects (docs/gc-api.md §0 pagination)"
                )
            for item in results:
                yield item
            if page.get("next"):
                url, query = page["next"], None  # ``next`` already holds the query
            elif "next" in page or not results or query is None:
                return
            else:  # a server that does not send ``next``: gcapi's way, until an empty page
                query = {**query, "offset": query["offset"] + len(results)}

    # ---- sockets and reader studies ---------------------------------------------------------------------------

    async def get_socket(self, slug: str) -> dict[str, Any] | None:
        """The socket (component interface) with ``slug``, or None if there is none (docs/gc-api.md §3). Cached."""
        async with self._lookups:  # concurrent cases asking at once make one request, not one each
            if slug not in self._sockets:
                page = await self.request("GET", "components/interfaces/", params={"slug": slug})
                results = page.get("results", [])
                self._sockets[slug] = results[0] if results else None
        return self._sockets[slug]

    async def refresh_socket(self, slug: str) -> dict[str, Any] | None:
        """The socket with ``slug`` as the server has it now (one request, whatever the cache holds); the cache then
        holds this answer, so a pass that follows a plan asks no more (a plan must see a socket created meanwhile)."""
        page = await self.request("GET", "components/interfaces/", params={"slug": slug})
        results = page.get("results", []) if isinstance(page, dict) else []
        async with self._lookups:
            self._sockets[slug] = results[0] if results else None
            return self._sockets[slug]

    async def reader_study_by_slug(self, slug: str) -> dict[str, Any]:
        """The reader study; ConfigurationError if it does not exist or this user is not a member (§0: absent)."""
        async with self._lookups:  # concurrent callers asking at once make one request, not one each
            if slug not in self._reader_studies:
                page = await self.request("GET", "reader-studies/", params={"slug": slug})
                results = page.get("results", [])
                if not results:
                    raise ConfigurationError(
                        f"reader study {slug!r} was not found at {self.base_url}: check the slug (the last part of "
                        "its URL) and that this token's user is an editor of the study"
                    )
                self._reader_studies[slug] = results[0]
        return self._reader_studies[slug]

    # ---- display sets ---------------------------------------------------------------------------------------

    async def iterate_display_sets(self, reader_study_pk: str) -> AsyncIterator[dict[str, Any]]:
        async for display_set in self.iterate_all("reader-studies/display-sets/", {"reader_study": reader_study_pk}):
            yield display_set

    async def find_display_set_by_title(self, reader_study_pk: str, title: str) -> dict[str, Any] | None:
        """The study's display set titled ``title``, or None. Titles are unique per study (docs/gc-api.md §9)."""
        async for display_set in self.iterate_display_sets(reader_study_pk):
            if display_set_title(display_set) == title:
                return display_set
        return None

    async def create_display_set(self, reader_study_slug: str, title: str, order: int | None = None) -> dict[str, Any]:
        """Creates an empty display set titled ``title``. A create the server refused (the title is taken) raises
        ``TitleTaken`` naming the display set that holds it; only a lost answer is settled by looking
        (``engine/gc/display_set_create.py``)."""
        return await create_display_set(self, reader_study_slug, title, order)

    async def display_set_has_answers(self, pk: str) -> bool:
        """Whether anyone answered on this display set (docs/gc-api.md §4: ``answers/?display_set=``; an editor sees all)."""
        page = await self.request("GET", "reader-studies/answers/", params={"display_set": pk, "limit": 1})
        return bool(page.get("count", len(page.get("results", []))))

    async def may_create_display_sets(self, reader_study_slug: str) -> bool:
        """Whether this token's user may add display sets to the study (an editor, docs/gc-api.md §0), found out without
        creating one: the probe's ``order`` is not a number, so the server refuses it whatever the rights, and DRF
        reports every field's errors at once — a ``reader_study`` error among them means "not an editor"."""
        body = {"reader_study": reader_study_slug, "title": "", "order": "not-a-number (gcbulk permission check)"}
        try:
            created = await self.request("POST", "reader-studies/display-sets/", json=body)
        except ApiError as error:
            if error.status == 400 and isinstance(error.body, dict):
                return "reader_study" not in error.body
            raise
        raise ApiError(
            "POST",
            self.url_for("reader-studies/display-sets/"),
            201,
            f"the server accepted a display set with a non-numeric order (pk {created.get('pk')}); "
            "it does not behave as Grand Challenge does",
        )

    async def require_editor(self, reader_study_slug: str, *, consequence: str) -> None:
        """Permission before bytes: raises ConfigurationError when this token's user is not an editor of the study
        (a reader's token would upload every file, then fail at the first display set). A server too busy to
        answer the probe is not a reason to stop: the first create will tell."""
        try:
            allowed = await self.may_create_display_sets(reader_study_slug)
        except GcbulkError as unsure:
            if classify(unsure) is Disposition.STOP_RUN:
                raise
            log.warning("could not check the right to add display sets (%s); going on", unsure)
            return
        if not allowed:
            # A misspelt slug is refused on the same field (DRF: "object does not exist"): name that cause, as every
            # other command does, rather than send an editor looking for rights they already have.
            await self.reader_study_by_slug(reader_study_slug)
            raise ConfigurationError(
                f"this token's user may not add display sets to reader study {reader_study_slug!r}: the user must "
                f"be an editor of the study (ask one of its editors to add them); {consequence}"
            )

    async def get_display_set(self, pk: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("GET", f"reader-studies/display-sets/{pk}/")
        return answer

    async def update_display_set(
        self,
        pk: str,
        *,
        values: list[dict[str, Any]] | None = None,
        order: int | None = None,
        title: str | None = None,
        retries: bool = True,
    ) -> dict[str, Any]:
        """PATCH (never PUT: a PUT removes the sockets it does not list, docs/gc-api.md §3). ``retries=False``: sent once,
        for the values PATCH, which is retried only after looking at the display set (engine/upload/values_patch.py)."""
        body: dict[str, Any] = {}
        if values is not None:
            body["values"] = values
        if order is not None:
            body["order"] = order
        if title is not None:
            body["title"] = title
        answer: dict[str, Any] = await self.request(
            "PATCH", f"reader-studies/display-sets/{pk}/", json=body, retries=retries
        )
        return answer

    # ---- upload sessions ------------------------------------------------------------------------------------

    async def create_upload_session(self, upload_urls: list[str]) -> dict[str, Any]:
        """``POST cases/upload-sessions/`` with only ``uploads``: a session that stays Queued until a values PATCH
        names it as ``upload_session`` (docs/gc-api.md §2, §10 path (a)), so its pk can be recorded before the PATCH.

        Retried like an idempotent call: a second Queued session whose answer was lost holds nothing and never
        runs (only the session named in the PATCH imports)."""
        answer: dict[str, Any] = await self.request(
            "POST", "cases/upload-sessions/", json={"uploads": upload_urls}, idempotent=True
        )
        return answer

    async def create_targeted_upload_session(
        self,
        upload_urls: list[str],
        *,
        container: Mapping[str, str],
        interface: str,
        reconcile: Callable[[], Awaitable[dict[str, Any] | None]],
    ) -> dict[str, Any]:
        """``POST cases/upload-sessions/`` with ``uploads``, ``display_set`` (pk) and ``interface``: the server
        imports the uploads into that socket of the display set at once (docs/gc-api.md §2, §10 path (b)) — one request
        where a Queued session and a values PATCH are two.

        Not idempotent (a second session would import the same uploads again): after an answer that may hide a
        success, ``reconcile`` looks for the session the first request made before anything is sent again."""
        # ``container``: ``{"display_set": pk}`` or ``{"archive_item": pk}`` (docs/gc-api.md §12), from the job's target.
        body = {"uploads": upload_urls, **container, "interface": interface}
        answer: dict[str, Any] = await self.request("POST", "cases/upload-sessions/", json=body, reconcile=reconcile)
        return answer

    async def get_upload_session(self, pk: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.request("GET", f"cases/upload-sessions/{pk}/")
        return answer

    async def iterate_upload_sessions(self) -> AsyncIterator[dict[str, Any]]:
        """This user's upload sessions; the list has no filters (docs/gc-api.md §2)."""
        async for session in self.iterate_all("cases/upload-sessions/"):
            yield session

"""HTTP conventions shared by every emulated endpoint (docs/gc-api.md §0).

The real server is Django REST Framework; these helpers reproduce the parts of its behaviour that clients depend on:
the exact ``Content-Type``, DRF's error bodies, absolute same-host URLs, limit/offset pagination, token auth.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gcbulk.emulator.store import Store, User

ROWS_RETURNED = web.RequestKey("rows_returned", int)
# A variant of an endpoint that the capacity profile charges differently (docs/gc-api.md §10: a display-set POST with
# ``order`` takes 137 ms, without 105 ms).
SERVICE_VARIANT = web.RequestKey("service_variant", str)

API_PREFIX = "/api/v1/"
# gcapi decodes JSON only when the header equals this string exactly (docs/gc-api.md §8): no "; charset=utf-8".
JSON_CONTENT_TYPE = "application/json"
DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000

# Which of the two sites an application serves: fault rules and counters tell them apart by it.
SITE_API = "api"
SITE_S3 = "s3"
SITE = web.AppKey("site", str)
# The authenticated user of a request; absent for guardian's anonymous user.
USER = web.RequestKey("user", User)


class ApiError(Exception):
    """Raised by handlers; rendered as a DRF-shaped JSON error by ``error_middleware``."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": JSON_CONTENT_TYPE})


def not_found(model_name: str | None = None) -> ApiError:
    detail = f"No {model_name} matches the given query." if model_name else "Not found."
    return ApiError(404, {"detail": detail})


def forbidden(detail: str = "You do not have permission to perform this action.") -> ApiError:
    return ApiError(403, {"detail": detail})


def not_authenticated() -> ApiError:
    return ApiError(401, {"detail": "Authentication credentials were not provided."})


def method_not_allowed(method: str) -> ApiError:
    return ApiError(405, {"detail": f'Method "{method}" not allowed.'})


def bad_request(body: Any) -> ApiError:
    return ApiError(400, body)


def iso(moment: datetime | None) -> str | None:
    """DRF's datetime format: ISO-8601 in UTC with a ``Z`` suffix."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def absolute_url(request: web.Request, path: str) -> str:
    """An absolute URL on the scheme, host and port the client used (gcapi rejects any other netloc)."""
    return f"{request.scheme}://{request.host}{API_PREFIX}{path.lstrip('/')}"


def site_url(request: web.Request, path: str) -> str:
    return f"{request.scheme}://{request.host}/{path.lstrip('/')}"


def pk_from_url(url: Any, collection: str) -> str | None:
    """The pk at the end of an API URL such as ``https://host/api/v1/uploads/<pk>/``; None if it is not one."""
    if not isinstance(url, str):
        return None
    marker = f"{API_PREFIX}{collection.strip('/')}/"
    head, sep, tail = url.partition(marker)
    if not sep:
        return None
    pk = tail.strip("/")
    return pk if pk and "/" not in pk else None


async def read_json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise bad_request({"detail": f"JSON parse error - {exc}"}) from None
    if not isinstance(data, dict):
        raise bad_request({"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]})
    return data


def _page_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return default
    return max(value, 0)


def paginate(
    request: web.Request, items: Sequence[Any] | Iterable[Any], serialize: Callable[[Any], Any]
) -> web.Response:
    """DRF's LimitOffsetPagination: default 100, max 1000 (clipped), absolute ``next``/``previous``."""
    items = list(items)
    limit = min(_page_param(request, "limit", DEFAULT_PAGE_LIMIT), MAX_PAGE_LIMIT) or DEFAULT_PAGE_LIMIT
    offset = _page_param(request, "offset", 0)
    page = items[offset : offset + limit]

    def link(new_offset: int) -> str:
        query = dict(request.query)
        query.update(limit=str(limit), offset=str(new_offset))
        return f"{request.scheme}://{request.host}{request.path}?{urlencode(query)}"

    request[ROWS_RETURNED] = len(page)  # the capacity profile charges list pages per row (docs/gc-api.md §10)
    next_url = link(offset + limit) if offset + limit < len(items) else None
    previous_url = link(max(offset - limit, 0)) if offset > 0 else None
    return json_response(
        {"count": len(items), "next": next_url, "previous": previous_url, "results": [serialize(i) for i in page]}
    )


def current_user(request: web.Request) -> User | None:
    """The authenticated user, or None for guardian's anonymous user."""
    return request.get(USER)


def require_user(request: web.Request) -> User:
    user = current_user(request)
    if user is None:
        raise not_authenticated()
    return user


def token_from_header(header: str | None) -> str | None:
    """knox accepts only the ``Bearer`` keyword, in any case (gcapi sends ``BEARER``); any other header is ignored,
    so the request runs as the anonymous user (docs/gc-api.md §10)."""
    if not header:
        return None
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]


def auth_middleware_for(store: Store) -> Callable[..., Any]:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX) or request.path.startswith("/media/"):
            token = token_from_header(request.headers.get("Authorization"))
            if token is not None:
                user = store.users_by_token.get(token)
                if user is None:
                    raise ApiError(401, {"detail": "Invalid token."})
                request[USER] = user
        return await handler(request)

    return auth_middleware


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return json_response(error.body, status=error.status)
    except web.HTTPMethodNotAllowed:
        return json_response({"detail": f'Method "{request.method}" not allowed.'}, status=405)
    except web.HTTPNotFound:
        if request.path.startswith(API_PREFIX):
            return json_response({"detail": "Not found."}, status=404)
        raise

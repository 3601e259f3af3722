"""Test controls under ``/_admin/``: **not part of the Grand Challenge API**, and never under ``/api/v1/``.

Guard: when ``config.admin_token`` is set (the CLI sets one whenever it listens on a non-loopback address) every
``/_admin/`` request needs ``Authorization: Bearer <admin token>``; on loopback without a token they are open, as the
emulator's whole world is then local. The users' API tokens never grant admin access.

Routes (JSON in and out):

* ``GET /_admin/`` — this list.
* ``GET /_admin/faults`` — the fault plan with per-rule ``matched``/``fired`` counts.
  ``PUT`` ``{"seed": 7, "rules": [...]}`` replaces it and restarts the RNG (from the given seed, else the current
  one, so a scenario replays), ``POST`` ``{"rules": [...]}`` appends, ``DELETE`` clears. Rule fields: see
  ``emulator/faults.py``.
* ``GET /_admin/clock`` — ``{"now": iso, "timestamp": s}``; ``POST /_admin/clock/advance`` ``{"seconds": 3601}``.
* ``POST /_admin/sweep`` — runs the upload sweep now: ``{"deleted": [upload pks]}``.
* ``GET /_admin/counters`` — requests per endpoint and part PUTs per (upload, part); ``DELETE`` resets them.

Other modules add their own ``/_admin/`` routes (``admin_answers``); this module's middleware guards them all.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gcbulk.emulator.context import context_of
from gcbulk.emulator.faults import ADMIN_PREFIX, FaultConfigError, parse_fault_document
from gcbulk.emulator.http import iso, token_from_header
from gcbulk.emulator.sweep import sweep_expired_uploads

ROUTES = {
    "GET /_admin/": "this list",
    "GET|PUT|POST|DELETE /_admin/faults": "read / replace / append to / clear the fault plan",
    "GET /_admin/clock": "the emulator clock",
    "POST /_admin/clock/advance": 'move the clock forward: {"seconds": N}',
    "POST /_admin/sweep": "run the hourly upload sweep now",
    "GET|DELETE /_admin/counters": "request and part-PUT counters / reset them",
}


def admin_json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def admin_error(status: int, message: str) -> web.HTTPException:
    exception_class = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized}[status]
    return exception_class(text=json.dumps({"detail": message}), content_type="application/json")


@web.middleware
async def admin_guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path.startswith(ADMIN_PREFIX) or request.path == ADMIN_PREFIX.rstrip("/"):
        expected = context_of(request).config.admin_token
        if expected:
            given = token_from_header(request.headers.get("Authorization")) or ""
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise admin_error(401, "The /_admin/ routes need 'Authorization: Bearer <admin token>'.")
    return await handler(request)


async def read_admin_json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json() if request.can_read_body else {}
    except ValueError as error:
        raise admin_error(400, f"body is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise admin_error(400, "body must be a JSON object")
    return data


async def index(request: web.Request) -> web.Response:
    return admin_json({"routes": ROUTES})


async def get_faults(request: web.Request) -> web.Response:
    return admin_json(context_of(request).faults.describe())


async def _parsed_faults(request: web.Request) -> tuple[list[Any], int | None]:
    try:
        return parse_fault_document(await read_admin_json(request), "request body")
    except FaultConfigError as error:
        raise admin_error(400, str(error)) from None


async def replace_faults(request: web.Request) -> web.Response:
    rules, seed = await _parsed_faults(request)
    plan = context_of(request).faults
    plan.replace(rules, seed if seed is not None else plan.seed)
    return admin_json(plan.describe())


async def add_faults(request: web.Request) -> web.Response:
    rules, seed = await _parsed_faults(request)
    if seed is not None:
        raise admin_error(400, "a seed can only be set with PUT /_admin/faults, which replaces the plan")
    plan = context_of(request).faults
    plan.add(rules)
    return admin_json(plan.describe())


async def clear_faults(request: web.Request) -> web.Response:
    plan = context_of(request).faults
    plan.replace([])
    return admin_json(plan.describe())


def _clock_state(request: web.Request) -> dict[str, Any]:
    clock = context_of(request).clock
    return {"now": iso(clock.now()), "timestamp": clock.timestamp()}


async def get_clock(request: web.Request) -> web.Response:
    return admin_json(_clock_state(request))


async def advance_clock(request: web.Request) -> web.Response:
    seconds = (await read_admin_json(request)).get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise admin_error(400, 'give {"seconds": N} with N a number >= 0; the clock only moves forward')
    context_of(request).clock.advance(float(seconds))
    return admin_json(_clock_state(request))


async def sweep_now(request: web.Request) -> web.Response:
    return admin_json({"deleted": sweep_expired_uploads(context_of(request))})


async def get_counters(request: web.Request) -> web.Response:
    return admin_json(context_of(request).counters.snapshot())


async def reset_counters(request: web.Request) -> web.Response:
    counters = context_of(request).counters
    counters.reset()
    return admin_json(counters.snapshot())


def setup(app: web.Application) -> None:
    router = app.router
    router.add_get("/_admin/", index)
    router.add_get("/_admin/faults", get_faults)
    router.add_put("/_admin/faults", replace_faults)
    router.add_post("/_admin/faults", add_faults)
    router.add_delete("/_admin/faults", clear_faults)
    router.add_get("/_admin/clock", get_clock)
    router.add_post("/_admin/clock/advance", advance_clock)
    router.add_post("/_admin/sweep", sweep_now)
    router.add_get("/_admin/counters", get_counters)
    router.add_delete("/_admin/counters", reset_counters)

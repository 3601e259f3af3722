"""Builds the emulator: the Grand Challenge API application and the S3 application beside it.

They are two aiohttp applications on two ports because they are two hosts in production: gcapi keeps the
Authorization header only on the API host, and a redirect to a file on the S3 host crosses an origin (docs/gc-api.md §4).
Both share one ``Context`` (``gcbulk.emulator.context``).
"""

from __future__ import annotations

from aiohttp import web

from gcbulk.emulator import (
    admin,
    admin_answers,
    answers,
    archives,
    dicom_sets,
    display_sets,
    images,
    notifications,
    persistence,
    reader_studies,
    s3,
    sweep,
    upload_sessions,
    uploads,
)
from gcbulk.emulator.capacity import capacity_middleware_for
from gcbulk.emulator.context import CONTEXT, GIB, SCHEMA_2025_11, Context, context_of
from gcbulk.emulator.counters import COUNTERS, counting_middleware
from gcbulk.emulator.faults import FAULT_PLAN, fault_middleware
from gcbulk.emulator.http import (
    SITE,
    SITE_API,
    SITE_S3,
    auth_middleware_for,
    error_middleware,
    json_response,
)


async def gcapi_version(request: web.Request) -> web.Response:
    """``GET /api/v1/gcapi/``: no auth. The older server reported 0.13.2 (docs/gc-api.md §9)."""
    latest = "0.13.2" if context_of(request).config.schema == SCHEMA_2025_11 else "0.16.1"
    return json_response({"latest_version": latest, "lowest_supported_version": "0.13.0"})


def _share_context(app: web.Application, context: Context, site: str) -> None:
    app[CONTEXT] = context
    app[SITE] = site
    app[FAULT_PLAN] = context.faults
    app[COUNTERS] = context.counters


def build_api_app(context: Context) -> web.Application:
    # Faults sit outside the error handling: injected failures come from in front of the application (a proxy, the
    # network), and a response cut mid-body is the rendered one.
    # The capacity profile's worker pool sits behind the injected faults (they come from in front of the server).
    capacity = [capacity_middleware_for(context.config.capacity)] if context.config.capacity else []
    app = web.Application(
        middlewares=[
            counting_middleware,
            fault_middleware,
            *capacity,
            error_middleware,
            admin.admin_guard_middleware,
            auth_middleware_for(context.store),
        ],
        client_max_size=16 * 1024**2,  # DATA_UPLOAD_MAX_MEMORY_SIZE (docs/gc-api.md §5)
    )
    _share_context(app, context, SITE_API)
    app.router.add_get("/api/v1/gcapi/", gcapi_version)
    if context.config.persist:
        persistence.setup(app)
    for module in (
        uploads,
        upload_sessions,
        reader_studies,
        display_sets,
        archives,
        answers,
        images,
        notifications,
        admin,
        admin_answers,
        sweep,
        dicom_sets,
    ):
        module.setup(app)
    return app


def build_s3_app(context: Context) -> web.Application:
    app = web.Application(middlewares=[counting_middleware, fault_middleware], client_max_size=6 * GIB)
    _share_context(app, context, SITE_S3)
    s3.setup(app)
    return app

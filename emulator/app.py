"""Builds the emulator: the Grand Challenge API application and the S3 application beside it.

They are two aiohttp applications on two ports because they are two hosts in production: gcapi keeps the
Authorization header only on the API host, and a redirect to a file on the S3 host crosses an origin (contract §4).
Both share one ``Context``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from emulator.clock import Clock
from emulator.counters import COUNTERS, Counters, counting_middleware
from emulator.faults import FAULT_PLAN, FaultPlan, FaultRule, fault_middleware
from emulator.http import SITE, SITE_API, SITE_S3, auth_middleware_for, error_middleware, json_response
from emulator.objects import ObjectStore, UrlSigner
from emulator.store import Store

GIB = 1024**3

SCHEMA_CURRENT = "current"
SCHEMA_2025_11 = "2025-11"
SCHEMAS = (SCHEMA_CURRENT, SCHEMA_2025_11)


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    data_dir: Path
    # "current" answers with the models gcapi 0.16.1 requires (contract §8); "2025-11" like the server of contract §9.
    schema: str = SCHEMA_CURRENT
    presigned_url_expiry_seconds: float = 3600.0
    download_url_expiry_seconds: float = 300.0
    # Delay before the import worker picks up an upload session; the real worker takes about a second (contract §9).
    import_delay_seconds: float = 0.2
    max_uploads_per_user: int = 2000
    max_uploads_per_session: int = 100
    max_active_imports_per_user: int = 16
    unverified_byte_quota: int = 2 * GIB
    verified_byte_quota: int = 128 * GIB
    upload_timeout_seconds: float = 24 * 3600.0
    sweep_interval_seconds: float = 3600.0
    fault_seed: int = 0
    # Faults in force from the start (emulator/faults.py); the admin endpoint changes them at runtime.
    fault_rules: tuple[FaultRule, ...] = ()
    # When set, /_admin/ needs "Authorization: Bearer <admin_token>" (emulator/admin.py).
    admin_token: str = ""


@dataclass
class Context:
    config: EmulatorConfig
    store: Store = field(default_factory=Store)
    clock: Clock = field(default_factory=Clock)
    objects: ObjectStore = field(init=False)
    signer: UrlSigner = field(init=False)
    faults: FaultPlan = field(init=False)
    counters: Counters = field(default_factory=Counters)
    # Set once the S3 site is bound: presigned URLs point there.
    s3_base_url: str = ""

    def __post_init__(self) -> None:
        self.objects = ObjectStore(self.config.data_dir)
        self.signer = UrlSigner(self.clock)
        self.faults = FaultPlan(self.config.fault_rules, seed=self.config.fault_seed)


CONTEXT = web.AppKey("context", Context)


def context_of(request: web.Request) -> Context:
    return request.app[CONTEXT]


async def gcapi_version(request: web.Request) -> web.Response:
    """``GET /api/v1/gcapi/``: no auth. The older server reported 0.13.2 (contract §9)."""
    latest = "0.13.2" if context_of(request).config.schema == SCHEMA_2025_11 else "0.16.1"
    return json_response({"latest_version": latest, "lowest_supported_version": "0.13.0"})


def _share_context(app: web.Application, context: Context, site: str) -> None:
    app[CONTEXT] = context
    app[SITE] = site
    app[FAULT_PLAN] = context.faults
    app[COUNTERS] = context.counters


def build_api_app(context: Context) -> web.Application:
    from emulator import (
        admin,
        admin_answers,
        answers,
        display_sets,
        images,
        reader_studies,
        sweep,
        upload_sessions,
        uploads,
    )

    # Faults sit outside the error handling: injected failures come from in front of the application (a proxy, the
    # network), and a response cut mid-body is the rendered one.
    app = web.Application(
        middlewares=[
            counting_middleware,
            fault_middleware,
            error_middleware,
            admin.admin_guard_middleware,
            auth_middleware_for(context.store),
        ],
        client_max_size=16 * 1024**2,  # DATA_UPLOAD_MAX_MEMORY_SIZE (contract §5)
    )
    _share_context(app, context, SITE_API)
    app.router.add_get("/api/v1/gcapi/", gcapi_version)
    for module in (uploads, upload_sessions, reader_studies, display_sets, answers, images, admin, admin_answers, sweep):
        module.setup(app)
    return app


def build_s3_app(context: Context) -> web.Application:
    from emulator import s3

    app = web.Application(middlewares=[counting_middleware, fault_middleware], client_max_size=6 * GIB)
    _share_context(app, context, SITE_S3)
    s3.setup(app)
    return app

"""What the emulator's two applications share: its configuration and one ``Context`` (store, clock, objects, faults).

Kept apart from ``gcbulk.emulator.app`` (which assembles the routes) so that every route module can import the context
without importing the app that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gcbulk.emulator.capacity import CapacityProfile
from gcbulk.emulator.clock import Clock
from gcbulk.emulator.counters import Counters
from gcbulk.emulator.faults import FaultPlan, FaultRule
from gcbulk.emulator.objects import ObjectStore, UrlSigner
from gcbulk.emulator.store import Store

GIB = 1024**3
# The emulator listens on loopback unless told otherwise (tests and benchmarks talk only to servers on 127.0.0.1).
LOOPBACK = "127.0.0.1"

SCHEMA_CURRENT = "current"
SCHEMA_2025_11 = "2025-11"
SCHEMAS = (SCHEMA_CURRENT, SCHEMA_2025_11)


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    data_dir: Path
    # "current" answers with the models gcapi 0.16.1 requires (docs/gc-api.md §8); "2025-11" like the server of docs/gc-api.md §9.
    schema: str = SCHEMA_CURRENT
    presigned_url_expiry_seconds: float = 3600.0
    download_url_expiry_seconds: float = 300.0
    # Delay before the import worker picks up an upload session; the real worker takes about a second (docs/gc-api.md §9).
    import_delay_seconds: float = 0.2
    # Between a session turning Succeeded and its image appearing in the display set (a separate task, docs/gc-api.md §10).
    link_delay_seconds: float = 0.05
    # Between a display-set POST's checks (highest order, unique title) and its insert (docs/gc-api.md §10).
    create_round_trip_seconds: float = 0.002
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
    # The real server's finite workers and service times (emulator/capacity.py); None answers at once (tests).
    capacity: CapacityProfile | None = None
    # Keep the state (and the CA) in data_dir across restarts (emulator/persistence.py); False: in memory only.
    persist: bool = False
    # The server de-identifies a DICOM Image Set again (docs/gc-api.md §10); False stores the files as received, so a test
    # can see what the client sent (emulator/dicom_sets.py).
    dicom_server_deidentify: bool = True


@dataclass
class Context:
    config: EmulatorConfig
    store: Store = field(default_factory=Store)
    clock: Clock = field(default_factory=Clock)
    objects: ObjectStore = field(init=False)
    signer: UrlSigner = field(init=False)
    faults: FaultPlan = field(init=False)
    counters: Counters = field(default_factory=Counters)
    # Display sets an import worker is linking a value into right now (the capacity profile's lock, docs/gc-api.md §10).
    linking_display_sets: set[str] = field(default_factory=set)
    # Set once the S3 site is bound: presigned URLs point there.
    s3_base_url: str = ""

    def __post_init__(self) -> None:
        self.objects = ObjectStore(self.config.data_dir)
        self.signer = UrlSigner(self.clock)
        self.faults = FaultPlan(self.config.fault_rules, seed=self.config.fault_seed)


CONTEXT = web.AppKey("context", Context)


def context_of(request: web.Request) -> Context:
    return request.app[CONTEXT]

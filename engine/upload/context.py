"""The engine's knobs (``EngineConfig``) and what every transfer task shares (``TransferContext``).

Each concurrency knob maps to one anyio ``CapacityLimiter`` (rclone's ``--transfers`` / ``--checkers``): cases in
flight, files in flight, parts in flight (shared by every part of every file, so memory stays below
``parts_in_flight × part_size`` whatever the file sizes) and API calls in flight (held by the client). Server limits
are ``CountingGate``s (``engine/upload/server_limits.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.limits import (
    DEFAULT_LIVE_UPLOAD_CEILING,
    MAX_ACTIVE_IMPORTS,
    UPLOAD_CAP,
)
from gcbulk.engine.gc.retry import RetryPolicy
from gcbulk.engine.jobfile import EngineConfig as JobEngineKnobs
from gcbulk.engine.service.journal import Journal
from gcbulk.engine.service.progress import TransferStats
from gcbulk.engine.upload.server_limits import CountingGate, SweepGuard

MIB = 1024 * 1024

# Chosen by measurement (benchmarks/part_size.py: 16 files × 64 MiB through `gcbulk run` against the emulator in its
# own process, loopback TLS, 2 shared cores, 16 parts in flight), MiB/s for parts of 8 / 16 / 32 / 64 MiB:
#   no added latency:         177 / 128 / 154 / 134  (noisy ±20 %: the emulator's CPU is the limit, not the part size)
#   50 ms on every request:    81 /  82 / 109 / 133  (a WAN: each part pays a round trip, bigger parts amortise it)
# 32 MiB keeps most of the gain on a slow link while memory stays at parts_in_flight × 32 MiB = 512 MiB at most,
# and a part lost to an error or a kill costs 32 MiB to resend. It is also gcapi's part size (contract §1), and the
# job file's default (gcbulk.engine.jobfile). Files over 312 GiB grow it to fit 10 000 parts (gcbulk.engine.plan.parts.adjust_part_size).
DEFAULT_PART_SIZE = 32 * MIB


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    cases_in_flight: int = 64
    files_in_flight: int = 32
    parts_in_flight: int = 16
    api_calls_in_flight: int = 16
    part_size: int = DEFAULT_PART_SIZE
    # URLs asked for per presign call; they stay valid an hour (contract §1), far longer than a batch takes.
    presign_batch: int = 20
    live_upload_ceiling: int = DEFAULT_LIVE_UPLOAD_CEILING  # gcbulk.engine.gc.limits: below the server's cap of 2000
    imports_in_flight: int = MAX_ACTIVE_IMPORTS
    # A completed upload not yet consumed is reused only while younger than this (contract §1: swept after 24 h).
    reuse_completed_for_seconds: float = 22 * 3600.0
    sweep_guard: SweepGuard = field(default_factory=SweepGuard)
    # How long an import may take before the case fails with "import did not finish".
    import_timeout_seconds: float = 3600.0
    poll_initial_seconds: float = 0.25
    poll_max_seconds: float = 10.0
    # The upload-session list is scanned for failure reasons at most this often (it has no filters, contract §2).
    session_scan_interval_seconds: float = 2.0
    # After the first stop signal, in-flight parts may finish for this long before the run is cut.
    drain_seconds: float = 30.0
    progress_interval_seconds: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        for name in ("cases_in_flight", "files_in_flight", "parts_in_flight", "api_calls_in_flight", "presign_batch",
                     "live_upload_ceiling", "imports_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"engine.{name} must be at least 1, not {getattr(self, name)}")
        if self.imports_in_flight > MAX_ACTIVE_IMPORTS:
            raise ValueError(f"engine.imports_in_flight must be at most {MAX_ACTIVE_IMPORTS}: the server refuses more "
                             "(contract §2)")
        if self.live_upload_ceiling > UPLOAD_CAP:
            raise ValueError(f"engine.live_upload_ceiling must be at most {UPLOAD_CAP}: the server refuses more "
                             "(contract §1)")


def engine_config_from_job(knobs: JobEngineKnobs, **overrides: object) -> EngineConfig:
    """The job file's ``[engine]`` table (``gcbulk.engine.jobfile.EngineConfig``) mapped onto the engine's settings."""
    settings: dict[str, object] = dict(
        files_in_flight=knobs.files_in_flight,
        parts_in_flight=knobs.parts_in_flight,
        api_calls_in_flight=knobs.api_calls_in_flight,
        part_size=knobs.part_size,
        live_upload_ceiling=knobs.live_upload_ceiling,
        imports_in_flight=knobs.imports_in_flight,
        retry=RetryPolicy(attempts_per_item=knobs.attempts_per_item),
        # Cases wait on their files and imports; a few more cases than files keeps every file slot busy.
        cases_in_flight=max(knobs.files_in_flight * 2, 8),
    )
    settings.update(overrides)
    return EngineConfig(**settings)  # type: ignore[arg-type]


@dataclass
class TransferContext:
    client: GrandChallengeClient
    journal: Journal
    config: EngineConfig
    stats: TransferStats
    reader_study_slug: str
    upload_gate: CountingGate
    import_gate: CountingGate
    # Set by the first stop signal: start nothing new, let what is in flight finish.
    stopping: anyio.Event = field(default_factory=anyio.Event)
    files_limiter: anyio.CapacityLimiter = field(init=False)
    parts_limiter: anyio.CapacityLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.files_limiter = anyio.CapacityLimiter(self.config.files_in_flight)
        self.parts_limiter = anyio.CapacityLimiter(self.config.parts_in_flight)

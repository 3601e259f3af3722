"""The transfer engine's settings: one frozen ``TransferSettings``, the job file's ``[engine]`` table and the
``GCBULK_*`` variables resolved onto it by ``gcbulk.engine.settings`` (the one place precedence is applied).

Each concurrency knob maps to one anyio ``CapacityLimiter`` (rclone's ``--transfers`` / ``--checkers``): cases in
flight, files in flight, parts in flight (shared by every part of every file, so memory stays below
``parts_in_flight × part_size`` whatever the file sizes) and API calls in flight (held by the client). Server limits
are ``CountingGate``s (``gcbulk.engine.upload.server_limits``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from gcbulk.engine.dicom.options import DicomOptions
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.gc.limits import (
    DEFAULT_LIVE_UPLOAD_CEILING,
    MAX_ACTIVE_IMPORTS,
    UPLOAD_CAP,
)
from gcbulk.engine.gc.retry import RetryPolicy
from gcbulk.engine.plan.parts import MAX_PART_SIZE, MIN_PART_SIZE
from gcbulk.engine.upload.server_limits import SweepGuard

MIB = 1024 * 1024

# Chosen by measurement (benchmarks/part_size.py: 16 files × 64 MiB through `gcbulk run` against the emulator in its
# own process, loopback TLS, 2 shared cores, 16 parts in flight), MiB/s for parts of 8 / 16 / 32 / 64 MiB:
#   no added latency:         177 / 128 / 154 / 134  (noisy ±20 %: the emulator's CPU is the limit, not the part size)
#   50 ms on every request:    81 /  82 / 109 / 133  (a WAN: each part pays a round trip, bigger parts amortise it)
# 32 MiB keeps most of the gain on a slow link while memory stays at parts_in_flight × 32 MiB = 512 MiB at most,
# and a part lost to an error or a kill costs 32 MiB to resend. It is also gcapi's part size (docs/gc-api.md §1).
# Files over 312 GiB grow it to fit 10 000 parts (gcbulk.engine.plan.parts.adjust_part_size).
DEFAULT_PART_SIZE = 32 * MIB
DEFAULT_ATTEMPTS_PER_ITEM = 5
# Below this a heartbeat (a third of the lease) could not be sure to arrive in time on a busy database.
MIN_LEASE_SECONDS = 3

# The knobs a job file's [engine] table and GCBULK_<NAME> may set; the rest are the engine's own tuning.
JOB_KNOBS = (
    "files_in_flight",
    "parts_in_flight",
    "api_calls_in_flight",
    "part_size",
    "live_upload_ceiling",
    "imports_in_flight",
    "attempts_per_item",
    "server_limit_retries",
    "adaptive_concurrency",
    "stagger_image_values",
    "lease_seconds",
    "import_timeout",
    "limit_wait_timeout_seconds",
    "image_link_wait_seconds",
)
# The knobs that are switches (true / false) rather than numbers.
SWITCH_KNOBS = ("adaptive_concurrency", "stagger_image_values")


@dataclass(frozen=True, kw_only=True)
class TransferSettings:
    files_in_flight: int = 8
    parts_in_flight: int = 16
    api_calls_in_flight: int = 16
    part_size: int = DEFAULT_PART_SIZE  # preferred; grown per file to fit 10 000 parts
    live_upload_ceiling: int = DEFAULT_LIVE_UPLOAD_CEILING  # below the server's cap of 2000 (docs/gc-api.md §1)
    imports_in_flight: int = MAX_ACTIVE_IMPORTS
    # API calls and imports in flight are learned from the server's latency (engine/gc/pacer.py), with the two knobs
    # above as upper bounds; false pins them at the knobs.
    adaptive_concurrency: bool = True
    # A case's image values are handed over one at a time, each once the one before is in place: two values of one
    # display set that finish importing together contend for its lock, and the loser holds an import worker for up
    # to 5 s (docs/gc-api.md §10). Measured by benchmarks/compare_gcapi.py (R1, stagger on and off).
    stagger_image_values: bool = True
    # Several workers on one job (a PostgreSQL ledger): a worker silent for this long is taken for dead and its
    # cases are taken over; it renews its leases every third of it (engine/upload/leases.py). Every worker of a job
    # reads it from the same job file.
    lease_seconds: int = 30
    # Cases wait on their files and imports; a few more cases than files keeps every file slot busy. None: derived.
    cases_in_flight: int | None = None
    # URLs asked for per presign call; they stay valid an hour (docs/gc-api.md §1), far longer than a batch takes.
    presign_batch: int = 20
    # A completed upload not yet consumed is reused only while younger than this (docs/gc-api.md §1: swept after 24 h).
    reuse_completed_for_seconds: float = 22 * 3600.0
    sweep_guard: SweepGuard = field(default_factory=SweepGuard)
    # Seconds an import may take before its value fails with "import did not finish"; None ("auto"): from the
    # value's size and the server's observed import times (engine/upload/import_deadline.py).
    import_timeout: float | None = None
    # A display set titled like a case but not made by this job is adopted only when the user asks (run
    # --adopt-existing): never one with answers, and values already in it are kept, never replaced.
    adopt_existing: bool = False
    # How long a case may wait for room under the live-upload ceiling or the import limit before it fails with that
    # reason (the wait says what it waits for every few seconds meanwhile). The account's uploads count against the
    # ceiling, other tools' included (docs/gc-api.md §1): a job file sets it low to fail fast when they hold it.
    limit_wait_timeout_seconds: float = 3600.0
    # An image whose uploads are gone though no answer named its session (a lost answer, a killed run): the server
    # links an import's image moments after it consumes the uploads (docs/gc-api.md §10), and uploads swept unused
    # never make one. After this long without the image the uploads count as swept and the files go up again; a
    # server whose imports link slowly needs more, never less than a few seconds.
    image_link_wait_seconds: float = 30.0
    poll_initial_seconds: float = 0.25
    poll_max_seconds: float = 10.0
    # The upload-session list is scanned for failure reasons at most this often (it has no filters, docs/gc-api.md §2).
    session_scan_interval_seconds: float = 2.0
    # After the first stop signal, in-flight parts may finish for this long before the run is cut.
    drain_seconds: float = 30.0
    progress_interval_seconds: float = 10.0
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts_per_item=DEFAULT_ATTEMPTS_PER_ITEM))
    # The job's [dicom] table (de-identification, staging, image names), carried here to the DICOM Image Set upload.
    dicom: DicomOptions = field(default_factory=DicomOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "import_timeout", parse_import_timeout("engine.import_timeout", self.import_timeout))
        if self.cases_in_flight is None:
            object.__setattr__(self, "cases_in_flight", self.case_slots)
        for name in ("files_in_flight", "parts_in_flight", "api_calls_in_flight", "cases_in_flight", "presign_batch"):
            _positive(f"engine.{name}", getattr(self, name))
        _positive("engine.attempts_per_item", self.retry.attempts_per_item)
        wait = self.limit_wait_timeout_seconds
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait > 0:
            raise ConfigurationError(
                "engine.limit_wait_timeout_seconds must be a number of seconds above 0 (how long a case may wait for "
                f"room under the live-upload ceiling or the imports limit before it fails), got {wait!r}"
            )
        link_wait = self.image_link_wait_seconds
        if isinstance(link_wait, bool) or not isinstance(link_wait, int | float) or not link_wait >= 1:
            raise ConfigurationError(
                "engine.image_link_wait_seconds must be a number of seconds of at least 1 (how long an image whose "
                f"uploads the server consumed may take to show before the files are sent again), got {link_wait!r}"
            )
        if (
            not isinstance(self.lease_seconds, int)
            or isinstance(self.lease_seconds, bool)
            or not (MIN_LEASE_SECONDS <= self.lease_seconds <= 3600)
        ):
            raise ConfigurationError(
                f"engine.lease_seconds must be a whole number of seconds from {MIN_LEASE_SECONDS}"
                f" to 3600 (how long a silent worker keeps its cases), got {self.lease_seconds!r}"
            )
        for name in SWITCH_KNOBS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"engine.{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.part_size, int) or not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ConfigurationError(
                f"engine.part_size must be between 5 MiB and 5 GiB (S3's part limits), got {self.part_size} bytes"
            )
        if not isinstance(self.live_upload_ceiling, int) or not 1 <= self.live_upload_ceiling <= UPLOAD_CAP:
            raise ConfigurationError(
                f"engine.live_upload_ceiling must be between 1 and {UPLOAD_CAP} (the server's "
                f"upload cap, docs/gc-api.md §1), got {self.live_upload_ceiling}"
            )
        if not isinstance(self.imports_in_flight, int) or not 1 <= self.imports_in_flight <= MAX_ACTIVE_IMPORTS:
            raise ConfigurationError(
                f"engine.imports_in_flight must be between 1 and {MAX_ACTIVE_IMPORTS} (the "
                f"server's limit of active imports, docs/gc-api.md §2), got {self.imports_in_flight}"
            )

    @property
    def case_slots(self) -> int:
        """Cases in flight at once (``cases_in_flight``, derived from the files in flight when not set)."""
        return self.cases_in_flight if self.cases_in_flight is not None else max(self.files_in_flight * 2, 8)

    @property
    def attempts_per_item(self) -> int:
        return self.retry.attempts_per_item

    @property
    def server_limit_retries(self) -> int:
        return self.retry.server_limit_retries

    @classmethod
    def from_knobs(cls, knobs: dict[str, Any]) -> TransferSettings:
        """Settings from the job-file knobs (``JOB_KNOBS``); ``attempts_per_item`` goes into the retry policy."""
        values = dict(knobs)
        attempts = values.pop("attempts_per_item", DEFAULT_ATTEMPTS_PER_ITEM)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            _positive("engine.attempts_per_item", attempts)
        limit_waits = values.pop("server_limit_retries", RetryPolicy.server_limit_retries)
        if not isinstance(limit_waits, int) or isinstance(limit_waits, bool) or limit_waits < 0:
            raise ConfigurationError(
                "engine.server_limit_retries must be a whole number of at least 0 (0: a case fails at the server's "
                f"first cap or quota refusal), got {limit_waits!r}"
            )
        return cls(retry=RetryPolicy(attempts_per_item=attempts, server_limit_retries=limit_waits), **values)

    def knobs(self) -> dict[str, Any]:
        """The job-file knobs as they are now (for ``config show`` and for overriding)."""
        return {name: getattr(self, name) for name in JOB_KNOBS}

    def replace(self, **changes: Any) -> TransferSettings:
        return dataclasses.replace(self, **changes)


def parse_import_timeout(name: str, value: object) -> float | None:
    """``import_timeout``: seconds (a number above 0, or its text), or ``"auto"`` / None for the size-based default."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        seconds = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(
            f"{name} must be a number of seconds above 0, or \"auto\" (from each file's size and the server's "
            f"import times), got {value!r}"
        )
    return seconds


def _positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number of at least 1, got {value!r}")


def parse_switch(name: str, text: str) -> bool:
    """A switch knob from an environment variable's text."""
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, got {text!r}")

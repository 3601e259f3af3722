"""How long an import may take before its value fails, and when it is late enough for ``status`` to name it.

Pure policy (s3transfer's ``ChunksizeAdjuster`` is the model): a function of the value's size, the server's import
times observed lately and the job's ``import_timeout`` setting, with the measurements that justify its numbers.

docs/gc-api.md §10 measured the server: building an image takes 0.5–0.7 s for 1–16 MiB and ≈1.5 s for 64 MiB, the
value of a two-image case appears 2.3 s after its PATCH (median; p90 4.9 s), and a backlog of 336 sessions drained
at ≈6.7 sessions/s (50 s). An import is expected to take ``BASE_SECONDS`` plus its size at ``EXPECTED_RATE``, or the
typical time the run has just observed, whichever is longer. The deadline is far beyond that (``DEADLINE_FACTOR``
times, at least ``FLOOR_SECONDS``): a failure that the server reports is caught within seconds by other means (the
upload session's status; for a DICOM Image Set, its uploads being consumed), so the deadline only ends the waits the
server never ends — and a backlog on a busy server must not fail healthy cases.
"""

from __future__ import annotations

MIB = 1024 * 1024
BASE_SECONDS = 5.0  # queueing, linking (a separate task) and the display-set lock's 0–5 s sleep (§10, §11)
EXPECTED_RATE = 8 * MIB  # bytes per second: 64 MiB in ≈1.5 s measured; 5× slack for a busier, older server
DEADLINE_FACTOR = 20.0
FLOOR_SECONDS = 300.0  # the largest backlog drain measured took 50 s; six times that before giving up
# ``status`` names an import once it has waited this many times its expected time (and at least OVERDUE_FLOOR):
# sooner, the ordinary spread of import times (p90 ≈ 2 × median) would fill it with imports that are fine.
OVERDUE_FACTOR = 3.0
OVERDUE_FLOOR_SECONDS = 60.0


def expected_import_seconds(size_bytes: int, observed_seconds: float | None = None) -> float:
    """How long the server should take to import a value of ``size_bytes``: from its size, or the typical import
    time observed lately (``ImportPacer.expected_seconds``) when that is longer (a busy server)."""
    from_size = BASE_SECONDS + size_bytes / EXPECTED_RATE
    return max(from_size, observed_seconds or 0.0)


def import_deadline(size_bytes: int, observed_seconds: float | None, configured_seconds: float | None) -> float:
    """Seconds an import may take before its value fails: the job's ``import_timeout`` when set, else
    ``DEADLINE_FACTOR`` × the expected time, at least ``FLOOR_SECONDS``."""
    if configured_seconds is not None:
        return configured_seconds
    return max(FLOOR_SECONDS, DEADLINE_FACTOR * expected_import_seconds(size_bytes, observed_seconds))


def overdue_after(size_bytes: int) -> float:
    """Seconds after which ``status`` lists an import still waiting as needing attention."""
    return max(OVERDUE_FLOOR_SECONDS, OVERDUE_FACTOR * expected_import_seconds(size_bytes))

"""A test-only crash hook: ``GCBULK_CRASH_AT=<point>[:<n>]`` kills the process with SIGKILL the n-th time (default
the first) the engine reaches the named point.

It exists so the crash-resume tests can stop ``gcbulk run`` exactly between two steps whose order matters (e.g. after
``POST uploads/`` answered but before the ledger recorded the pk) — something a timer-based kill hits only by luck.
The points are listed in ``POINTS``; reaching one costs a dict lookup when the variable is unset. Never set it
outside tests: the process dies like a power cut (that is the point).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV_VAR = "GCBULK_CRASH_AT"

POINTS = frozenset(
    {
        "during-dicom-staging",  # a DICOM image set is being de-identified in the process pool
        "after-dicom-staged",  # a de-identified set is staged and recorded, nothing of it uploaded
        "after-upload-intent",  # ledger says 'creating', POST uploads/ not sent yet
        "after-create-upload",  # the server created the upload; the ledger does not know its pk yet
        "after-upload-recorded",  # pk recorded, no part sent
        "mid-part",  # half of a part's bytes written to the socket
        "after-part-put",  # S3 has the part; the ledger does not have its ETag yet
        "after-part-recorded",  # the part's ETag is in the ledger
        "before-complete",  # all parts sent, complete not called
        "after-complete",  # the server completed the upload; the ledger still says initialized
        "after-upload-completed",  # completion recorded
        "after-display-set-intent",  # ledger says 'creating', POST display-sets/ not sent
        "after-create-display-set",  # the display set exists; its pk is not recorded
        "after-display-set-recorded",
        "after-session-created",  # an image value's upload session exists (Queued); its pk is not recorded
        "before-values-patch",  # uploads complete, the values PATCH not sent
        "after-values-patch",  # the PATCH was accepted; the ledger does not know yet
        "after-values-recorded",
        "during-import-poll",  # waiting for the import to show in the display set
        "after-import-seen",  # the display set shows the values; the case is not marked done yet
        "after-case-done",
    }
)


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV_VAR}={spec!r}: unknown crash point; known points: {', '.join(sorted(POINTS))}")
    return name, int(count or 1)


_target = _parse(os.environ.get(ENV_VAR))
_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Marks a named point; dies there when ``GCBULK_CRASH_AT`` asks for it."""
    if _target is None:
        return
    assert name in POINTS, name
    _hits[name] += 1
    if _target == (name, _hits[name]):
        os.kill(os.getpid(), signal.SIGKILL)

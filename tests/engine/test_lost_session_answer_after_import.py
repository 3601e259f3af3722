"""A lost answer to an aimed upload session (``POST cases/upload-sessions/`` with ``display_set``) whose import has
finished by the time the client looks it up. The server has consumed (deleted) the uploads, so the session list no
longer shows them under the session: a lookup by upload pks finds nothing, and a POST sent again answers 400
``{"uploads": ["Invalid hyperlink - Object does not exist."]}``. The case must end done, with its value in place and
no second session — as the server's truth says, not failed.

The random-kill soak (SQLite, seed 20261128: patient75) and the several-workers-under-faults test met it: one lost
answer, and a wait before the lookup longer than the import takes (the retry's back-off; a slow session listing).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.retry import RetryPolicy
from tests.engine.conftest import FAST_ENGINE, make_tutorial_tree, run_job, write_job
from tests.imaging import make_mask


@dataclasses.dataclass(frozen=True)
class _SlowFirstRetry(RetryPolicy):
    """Waits long enough before each retry for the import to be over (a real import takes about a second)."""

    def backoff(self, attempt: int) -> float:
        return 3.0  # longer than the import takes, even on a loaded machine


async def test_a_lost_session_answer_found_after_its_import_finished(tmp_path: Path, emulator: RunningEmulator) -> None:
    emulator.context.faults.replace(
        [FaultRule(match="POST /api/v1/cases/upload-sessions/", status=502, phase="after", times=1)]
    )
    make_tutorial_tree(tmp_path / "cases", 1)
    config = dataclasses.replace(FAST_ENGINE, retry=_SlowFirstRetry(**dataclasses.asdict(FAST_ENGINE.retry)))
    with anyio.fail_after(60):
        outcome = await run_job(write_job(tmp_path, emulator), emulator, config)
    assert outcome.failed == [] and outcome.done == 1
    targeted = [s for s in emulator.context.store.upload_sessions.values() if s.target_display_set_pk]
    assert len(targeted) == 2  # one per image: the lost one was adopted, not sent again


async def test_a_lost_session_answer_whose_import_failed_fails_its_case_with_what_is_known(
    tmp_path: Path, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refused segmentation's session consumed its uploads and linked nothing: after a bounded wait for the
    image the case fails, saying the answer was lost and how to send the files again — never a 400 from a resend,
    and never a hang."""
    cases = make_tutorial_tree(tmp_path / "cases", 1)
    make_mask(cases / "patient1" / "seg.mha", values=(0, 3))  # refused by the server's import
    # The CT goes first and stays whole; the segmentation's session is the lost one (the fault fires once, on it).
    emulator.context.faults.replace(
        [FaultRule(match="POST /api/v1/cases/upload-sessions/", status=502, phase="after", times=1, skip=1)]
    )
    config = dataclasses.replace(
        FAST_ENGINE, retry=_SlowFirstRetry(**dataclasses.asdict(FAST_ENGINE.retry)), image_link_wait_seconds=2.0
    )
    with anyio.fail_after(60):
        outcome = await run_job(write_job(tmp_path, emulator), emulator, config)
    assert outcome.done == 0 and [title for title, _ in outcome.failed] == ["patient1"]
    reason = outcome.failed[0][1]
    assert "answer was lost" in reason and "airway-segmentation" in reason and "retry-failed" in reason
    assert "Invalid hyperlink" not in reason
    targeted = [s for s in emulator.context.store.upload_sessions.values() if s.target_display_set_pk]
    assert len(targeted) == 2  # the lost one was not sent again

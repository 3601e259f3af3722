"""Grand Challenge's 24 h sweep deletes every upload a day old, whatever its state (docs/gc-api.md §1). A run killed at
any step of a case's life and resumed after the sweep makes the swept uploads again — Initialized or Completed,
before or after their session POST — and finishes every case with one display set each, in one run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from gcbulk.emulator.sweep import sweep_expired_uploads
from gcbulk.engine.jobfile import JobFileError, load_job
from gcbulk.engine.upload.crashpoints import ENV_VAR
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.engine.test_run_command import REPO, gcbulk, gcbulk_env

# Swept uploads never make an image: a run waits this long for one before sending the files again (30 s by default).
QUICK_LINK_WAIT = "image_link_wait_seconds = 5\n"

STEPS = [
    "after-upload-recorded",  # an Initialized upload, no part
    "after-part-recorded",  # an Initialized upload with a part
    "after-upload-completed",  # a Completed upload, its session not posted
    "after-display-set-recorded",  # the display set made, Completed uploads waiting for their session
    "after-session-created",  # the session POSTed (Queued), its pk not recorded
    "before-values-patch",
    "after-values-patch",
]


@pytest.mark.parametrize("step", STEPS)
def test_uploads_swept_while_a_killed_run_waited_are_made_again_and_every_case_finishes(
    step: str, tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    job = write_job(tmp_path, threaded_emulator, engine=QUICK_LINK_WAIT)
    token = threaded_emulator.tokens["editor"]
    killed = subprocess.run(
        [sys.executable, "-m", "gcbulk", "run", str(job), "--metrics-address", "off"],
        env=gcbulk_env(token) | {ENV_VAR: step},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert killed.returncode == -9, killed.stderr
    threaded_emulator.context.clock.advance(25 * 3600)  # a day later the hourly sweep has run
    sweep_expired_uploads(threaded_emulator.context)
    resumed = gcbulk("run", str(job), token=token)
    if step == "after-values-patch":
        # The import had begun when the uploads were swept under it: the server answers a failed import, which a
        # refused file answers too (its uploads emptied as well), so the case fails with the server's words — and
        # one retry-failed pass, which uploads its files again, finishes it.
        assert resumed.returncode in (0, 1), resumed.stderr
        if resumed.returncode == 1:
            retried = gcbulk("retry-failed", str(job), token=token)
            assert retried.returncode == 0, retried.stderr
    else:
        assert resumed.returncode == 0, resumed.stderr
    store = threaded_emulator.context.store
    assert sorted(ds.title for ds in store.display_sets.values()) == ["patient1", "patient2"]
    for display_set in store.display_sets.values():
        assert set(display_set.values) == {"ct-image", "airway-segmentation"}
        assert all(value.image_pk in store.images for value in display_set.values.values())


def test_completed_uploads_swept_during_the_run_before_their_session_post_are_made_again(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = write_job(tmp_path, threaded_emulator, engine=QUICK_LINK_WAIT)
    context = threaded_emulator.context
    # The session POSTs wait a moment before the server handles them: long enough for the sweep to come first, even
    # on a loaded machine (3 s was not: both sessions were handled before the second upload was seen completed).
    context.faults.replace([FaultRule(match="POST /api/v1/cases/upload-sessions/", latency_seconds=6, times=2)])
    process = subprocess.Popen(
        [sys.executable, "-m", "gcbulk", "run", str(job), "--metrics-address", "off"],
        env=gcbulk_env(threaded_emulator.tokens["editor"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + 60
    while sum(1 for u in list(context.store.uploads.values()) if u.status == "Completed") < 2:
        assert time.monotonic() < deadline and process.poll() is None, "the uploads never completed"
        time.sleep(0.02)
    context.clock.advance(25 * 3600)
    assert sweep_expired_uploads(context)  # both completed uploads, before their session POSTs are handled
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert '"event":"uploads_swept"' in out and "uploads are gone" in out, out  # said, in the JSON log lines
    (display_set,) = context.store.display_sets.values()
    assert set(display_set.values) == {"ct-image", "airway-segmentation"}


@pytest.mark.parametrize("value", ["0", "0.5", "true", '"soon"'])
def test_an_image_link_wait_too_short_to_see_an_import_link_or_not_seconds_is_refused_naming_the_key(
    tmp_path: Path, threaded_emulator: RunningEmulator, value: str
) -> None:
    # Shorter than a second would send the files of an import that is still linking its image a second time.
    job = write_job(tmp_path, threaded_emulator, engine=f"image_link_wait_seconds = {value}\n")
    with pytest.raises(
        JobFileError, match=r"engine\.image_link_wait_seconds must be a number of seconds of at least 1"
    ):
        load_job(job)

"""kill -9 at chosen points of ``gcbulk run``, then run again: one display set per case, each with its images, and
no part that S3 had stored is sent again.

The kill comes from the engine's test-only crash hook (``GCBULK_CRASH_AT``, ``engine/upload/crashpoints.py``), so each
scenario stops exactly between the two steps it names.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from gcbulk.emulator.server import RunningEmulator
from tests.engine.conftest import Finished, gcbulk_run, make_tutorial_tree, write_job
from tests.imaging import make_mha

# Every named point at its first hit, and some at a later hit (the n-th part, upload, display set, poll).
CRASH_POINTS = [
    "after-upload-intent",
    "after-create-upload",
    "after-upload-recorded",
    "mid-part",
    "after-part-put",
    "after-part-recorded",
    "before-complete",
    "after-complete",
    "after-upload-completed",
    "after-display-set-intent",
    "after-create-display-set",
    "after-display-set-recorded",
    "after-session-created",
    "before-values-patch",
    "after-values-patch",
    "after-values-recorded",
    "during-import-poll",
    "after-import-seen",
    "after-case-done",
    "mid-part:3",
    "after-part-put:2",
    "after-part-recorded:2",
    "after-create-upload:4",
    "after-complete:3",
    "after-create-display-set:2",
    "after-values-patch:2",
    "after-session-created:2",
    "during-import-poll:3",
]
TITLES = ["patient1", "patient2", "patient3"]


@pytest.fixture(scope="session")
def three_patients(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scenarios' case tree, written once per session (per test worker) and copied into each test."""
    cases = make_tutorial_tree(tmp_path_factory.mktemp("crash-resume") / "cases", 3)
    # 11 MiB in 5 MiB parts: three parts, so a crash can fall between parts of one file.
    make_mha(cases / "patient1" / "ct.mha", (44, 256, 512), seed=1)
    return cases


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_a_run_killed_anywhere_resumes_without_duplicates_or_resent_parts(
    crash_at: str,
    tmp_path: Path,
    threaded_emulator: RunningEmulator,
    three_patients: Path,
    resume_in_process: Callable[[Path, RunningEmulator], Finished],
) -> None:
    shutil.copytree(three_patients, tmp_path / "cases")
    job_file = write_job(tmp_path, threaded_emulator, engine='part_size = "5 MiB"\nfiles_in_flight = 2\n')

    killed = gcbulk_run(job_file, threaded_emulator, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    resumed = resume_in_process(job_file, threaded_emulator)
    assert resumed.exit_code == 0, resumed.stderr

    store = threaded_emulator.context.store
    titles = Counter(ds.title for ds in store.display_sets.values())
    assert titles == Counter(TITLES), "exactly one display set per case"
    for display_set in store.display_sets.values():
        assert set(display_set.values) == {"ct-image", "airway-segmentation"}
        assert all(value.image_pk in store.images for value in display_set.values.values())
    part_puts = threaded_emulator.context.counters.part_puts
    assert part_puts and set(part_puts.values()) == {1}, f"parts sent again: {dict(part_puts)}"
    # A create whose answer the kill lost left an empty upload on the server: the resumed run found and aborted it.
    assert [u.filename for u in store.uploads.values() if u.status == "Initialized"] == []


def test_a_run_killed_after_a_session_post_resumes_while_the_server_links_its_image(
    tmp_path: Path, threaded_emulator: RunningEmulator, resume_in_process: Callable[[Path, RunningEmulator], Finished]
) -> None:
    """Killed after the server answered an image's session POST but before the ledger recorded it: the resumed run
    finds the session by its uploads only while its import runs. Here the import is over, the uploads consumed, and
    the server links the image seconds later (docs/gc-api.md §10's gap): the resumed run must wait for the image instead
    of sending the POST again (which the server refuses: the uploads are gone) and failing a case that succeeds."""
    threaded_emulator.context.config = dataclasses.replace(threaded_emulator.context.config, link_delay_seconds=8.0)
    make_tutorial_tree(tmp_path / "cases", 1)
    job_file = write_job(tmp_path, threaded_emulator)

    killed = gcbulk_run(job_file, threaded_emulator, "after-session-created:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = threaded_emulator.context.store
    deadline = time.monotonic() + 30
    while not any(s.status == "Succeeded" for s in store.upload_sessions.values()):  # imported, uploads consumed
        assert time.monotonic() < deadline, "the import of the killed run's session did not end"
        time.sleep(0.05)
    assert not any(
        s.target_display_set_pk and store.display_sets[s.target_display_set_pk].values
        for s in store.upload_sessions.values()
    ), "linked already: the resume would not meet the gap"
    resumed = resume_in_process(job_file, threaded_emulator)
    assert resumed.exit_code == 0, resumed.stdout + resumed.stderr

    [display_set] = store.display_sets.values()
    assert set(display_set.values) == {"ct-image", "airway-segmentation"}
    targeted = [s for s in store.upload_sessions.values() if s.target_display_set_pk]
    assert len(targeted) == 2, "the session of the kill was not sent again"
    assert len(store.uploads) == 0 and len(threaded_emulator.context.counters.part_puts) == 2, (
        "no file was uploaded again (its upload, consumed, looked swept)"
    )

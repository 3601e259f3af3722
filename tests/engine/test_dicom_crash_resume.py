"""kill -9 of a real ``gcbulk run`` while DICOM image sets are de-identified and while they are uploaded: the next
run redoes no staged set, resends no part and makes one display set per case, each with its image set."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.jobfile import load_job
from gcbulk.state import dicom_staging
from gcbulk.state.ledger import Ledger, default_ledger_path
from tests.dicom.synthetic import PATIENT_NAME, edit, identified_series
from tests.engine.conftest import Finished, gcbulk_run, write_job

Resume = Callable[[Path, RunningEmulator], Finished]

RULES = '[[rules]]\ndicom = { Modality = "CT" }\nsocket = "dicom-image-set"\n'
CASES = ("patient1", "patient2", "patient3")


# Stored as received: what gcbulk uploaded is what the test reads back.
pytestmark = pytest.mark.emulator(dicom_server_deidentify=False)


@pytest.mark.parametrize(
    "crash_at",
    [
        "during-dicom-staging",
        "during-dicom-staging:2",
        "after-dicom-staged",
        "after-dicom-staged:3",
        "after-part-recorded:2",
        "after-upload-completed:4",
        "before-values-patch",
        "after-values-patch:2",
    ],
)
def test_kill_9_during_de_identification_or_upload_resumes_without_redoing_staged_sets(
    crash_at: str, tmp_path: Path, threaded_emulator: RunningEmulator, resume_in_process: Resume
) -> None:
    for number, title in enumerate(CASES, 1):
        identified_series(tmp_path / "cases" / title, 3, number=number, seed=number, rows=16, columns=16)
    job_file = write_job(tmp_path, threaded_emulator, rules=RULES, engine="files_in_flight = 2\n")

    killed = gcbulk_run(job_file, threaded_emulator, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = resume_in_process(job_file, threaded_emulator)
    assert resumed.exit_code == 0, resumed.stderr

    store = threaded_emulator.context.store
    assert Counter(ds.title for ds in store.display_sets.values()) == Counter(CASES), "one display set per case"
    for display_set in store.display_sets.values():
        image = store.images[display_set.values["dicom-image-set"].image_pk]
        assert len(image.dicom_instances) == 3
        for _, key in image.dicom_instances:
            raw = threaded_emulator.context.objects.object_path("images", key).read_bytes()
            assert PATIENT_NAME.encode() not in raw
    part_puts = threaded_emulator.context.counters.part_puts
    assert part_puts and set(part_puts.values()) == {1}, f"parts sent again: {dict(part_puts)}"
    job = load_job(job_file)
    with Ledger.open(default_ledger_path(job_file), job.binding) as ledger:
        items = [row["id"] for row in ledger.rows("SELECT id FROM items")]
        per_item = {item: dicom_staging.staging_events(ledger, item) for item in items}
    # Each set recorded once: de-identified once, or (killed between its last file and its record) found whole.
    assert set(per_item.values()) == {1} and len(per_item) == len(CASES), per_item
    assert not list(job.dicom.staging.iterdir()), "staged copies left behind"


@pytest.mark.parametrize("crash_at", ["after-dicom-staged", "after-upload-completed:2"])
def test_a_source_changed_after_staging_is_de_identified_again_and_sent_as_it_is_now(
    crash_at: str, tmp_path: Path, threaded_emulator: RunningEmulator, resume_in_process: Resume
) -> None:
    paths = identified_series(tmp_path / "cases" / "patient1", 3, description="before", seed=1)
    rules = RULES + 'image_name = "{SeriesDescription}"\n'
    job_file = write_job(tmp_path, threaded_emulator, rules=rules)
    # The name shows the change, from a field de-identification removes: sent only because the job asks for it.
    job_file.write_text(job_file.read_text() + "\n[dicom]\nallow_phi_titles = true\n")
    killed = gcbulk_run(job_file, threaded_emulator, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    # One file changes (size and mtime: the next run's plan picks it up); uploads of the others, made from the
    # earlier staging, carry its UIDs and must not be mixed into the new set.
    edit(paths[:1], SeriesDescription="after")
    resumed = resume_in_process(job_file, threaded_emulator)

    assert resumed.exit_code == 0, resumed.stderr
    store = threaded_emulator.context.store
    (display_set,) = store.display_sets.values()
    image = store.images[display_set.values["dicom-image-set"].image_pk]
    assert image.name == "after" and len(image.dicom_instances) == 3
    with Ledger.open(default_ledger_path(job_file), load_job(job_file).binding) as ledger:
        assert dicom_staging.staging_events(ledger) == 2, "the changed set was not de-identified again"


def test_a_staged_copy_changed_on_disk_is_not_sent_but_staged_again(
    tmp_path: Path, threaded_emulator: RunningEmulator, resume_in_process: Resume
) -> None:
    identified_series(tmp_path / "cases" / "patient1", 3, seed=4)
    job_file = write_job(tmp_path, threaded_emulator, rules=RULES)
    killed = gcbulk_run(job_file, threaded_emulator, "after-dicom-staged")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (copy,) = load_job(job_file).dicom.staging.glob("item-*/dicom_image_1.dcm")
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only the recorded SHA-256 tells
    copy.write_bytes(bytes(data))

    resumed = resume_in_process(job_file, threaded_emulator)

    assert resumed.exit_code == 0, resumed.stderr
    with Ledger.open(default_ledger_path(job_file), load_job(job_file).binding) as ledger:
        fresh = ledger.scalar("SELECT count(*) FROM events WHERE kind = 'dicom.staged'")
    assert fresh == 2, "the changed copy was sent instead of de-identified again"
    (display_set,) = threaded_emulator.context.store.display_sets.values()
    assert (
        len(threaded_emulator.context.store.images[display_set.values["dicom-image-set"].image_pk].dicom_instances) == 3
    )

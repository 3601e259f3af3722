"""A job that names ``archive = "slug"``: its cases become archive items (docs/gc-api.md §12) through the same engine
as display sets — plan, ledger, uploads, imports, status, verify and resume after kill -9.

The example seed's archive ``example-archive`` has ``editor`` as editor, ``reader2`` as uploader and ``reader1`` as a
user (a viewer, without ``upload_archive``).
"""

from __future__ import annotations

import dataclasses
import re
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from gcbulk import Archive
from gcbulk.emulator.server import RunningEmulator
from gcbulk.emulator.values import remove_value
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.target_ref import ARCHIVE as ARCHIVE_KIND
from gcbulk.engine.gc.target_ref import TargetRef
from gcbulk.engine.gc.targets import target_for
from gcbulk.engine.jobfile import JobFileError, load_job
from gcbulk.state.ledger import Ledger, default_ledger_path
from tests.engine.conftest import FAST_ENGINE, Finished, gcbulk_run, make_tutorial_tree, run_job, write_job
from tests.engine.test_run_command import gcbulk

ARCHIVE = "example-archive"
TITLES = ["patient1", "patient2", "patient3"]
SOCKETS = {"ct-image", "airway-segmentation"}


def archive_job(directory: Path, emulator: RunningEmulator, **kwargs: str) -> Path:
    """The tutorial's job file, aimed at the archive instead of the reader study."""
    job = write_job(directory, emulator, **kwargs)
    job.write_text(job.read_text().replace('reader_study = "example-study"', f'archive = "{ARCHIVE}"'))
    return job


def items_of_archive(emulator: RunningEmulator) -> list:
    store = emulator.context.store
    archive = store.archive_by_slug(ARCHIVE)
    assert archive is not None
    return [item for item in store.archive_items.values() if item.archive_pk == archive.pk]


def assert_one_complete_item_per_case(emulator: RunningEmulator) -> None:
    store = emulator.context.store
    items = items_of_archive(emulator)
    assert Counter(item.title for item in items) == Counter(TITLES), "exactly one archive item per case"
    for item in items:
        assert set(item.values) == SOCKETS, item.title
        assert all(value.image_pk in store.images for value in item.values.values())
    assert not store.display_sets, "an archive job makes no display set"


def test_the_tutorial_cases_become_archive_items_and_status_and_verify_report_on_them(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    job = archive_job(tmp_path, threaded_emulator)
    token = threaded_emulator.tokens["editor"]

    config = gcbulk("config", "show", str(job), "--json", token=token)
    assert config.returncode == 0, config.stderr
    assert '"archive"' in config.stdout and f'"{ARCHIVE}"' in config.stdout

    plan = gcbulk("plan", str(job), token=token)
    assert plan.returncode == 0, plan.stderr
    assert f"Plan for archive '{ARCHIVE}'" in plan.stdout

    run = gcbulk("run", str(job), token=token)
    assert run.returncode == 0, run.stderr
    assert "cases 3/3 done, 0 failed" in run.stderr
    assert_one_complete_item_per_case(threaded_emulator)
    sessions = threaded_emulator.context.store.upload_sessions.values()
    assert sessions and all(s.target_archive_item_pk for s in sessions), "each image imported into its item"

    again = gcbulk("run", str(job), token=token)
    assert again.returncode == 0, again.stderr
    assert_one_complete_item_per_case(threaded_emulator)

    status = gcbulk("status", str(job), token=token)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "done 3" in status.stdout

    verified = gcbulk("verify", str(job), token=token)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "The server holds everything the ledger says it does." in verified.stdout
    assert "Checked 3 case(s) with an archive item against the server." in verified.stdout

    # A value removed on the site: verify sees it gone from the item, and the next run sends it again.
    patient2 = next(item for item in items_of_archive(threaded_emulator) if item.title == "patient2")
    remove_value(threaded_emulator.context.store, patient2, "airway-segmentation")
    lost = gcbulk("verify", str(job), token=token)
    assert lost.returncode == 1, lost.stdout + lost.stderr
    assert f"re-queued patient2: display set {patient2.pk} no longer has a value for airway-segmentation" in lost.stdout
    repaired = gcbulk("run", str(job), token=token)
    assert repaired.returncode == 0, repaired.stderr
    assert_one_complete_item_per_case(threaded_emulator)


def test_a_viewer_of_the_archive_is_told_to_become_an_uploader_and_nothing_is_uploaded(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = archive_job(tmp_path, threaded_emulator)
    planned = gcbulk("plan", str(job), token=threaded_emulator.tokens["reader1"])
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert f"this token's user may not add items to archive '{ARCHIVE}'" in planned.stderr
    result = gcbulk("run", str(job), token=threaded_emulator.tokens["reader1"])
    assert result.returncode == 2, result.stderr
    assert f"this token's user may not add items to archive '{ARCHIVE}'" in result.stderr
    assert "uploader or editor of the archive (the upload_archive permission" in result.stderr
    assert "Traceback" not in result.stderr
    store = threaded_emulator.context.store
    assert not store.uploads and not items_of_archive(threaded_emulator)


def test_an_outsider_or_a_misspelt_archive_is_a_configuration_error(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = archive_job(tmp_path, threaded_emulator)
    job.write_text(job.read_text().replace(f'"{ARCHIVE}"', '"no-such-archive"'))
    result = gcbulk("run", str(job), token=threaded_emulator.tokens["editor"])
    assert result.returncode == 2
    assert "archive 'no-such-archive' was not found" in result.stderr


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ('reader_study = "s"\narchive = "a"\n', "name exactly one target (it names both)"),
        ("", 'reader_study is required (or archive): reader_study = "SLUG"'),
        ('archive = ""\n', "archive must be the slug"),
    ],
)
def test_a_job_names_exactly_one_target(tmp_path: Path, targets: str, message: str) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        f'{targets}base_url = "https://example.org/api/v1/"\ncase_root = "cases"\n\n'
        '[[rules]]\nglob = "*.mha"\nsocket = "ct-image"\n'
    )
    with pytest.raises(JobFileError, match=re.escape(message)):
        load_job(job)


def test_an_archive_ledger_is_not_reused_for_a_reader_study(tmp_path: Path, threaded_emulator: RunningEmulator) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = archive_job(tmp_path, threaded_emulator)
    token = threaded_emulator.tokens["editor"]
    assert gcbulk("plan", str(job), "--offline", token=token).returncode == 0
    job.write_text(job.read_text().replace(f'archive = "{ARCHIVE}"', 'reader_study = "example-study"'))
    result = gcbulk("plan", str(job), "--offline", token=token)
    assert result.returncode == 2
    assert f"reader study is 'archive:{ARCHIVE}', this job has 'example-study'" in result.stderr


@pytest.mark.parametrize(
    "crash_at", ["after-display-set-intent", "after-create-display-set", "after-session-created", "after-values-patch"]
)
def test_an_archive_run_killed_anywhere_resumes_without_a_duplicate_item(
    crash_at: str,
    tmp_path: Path,
    threaded_emulator: RunningEmulator,
    resume_in_process: Callable[[Path, RunningEmulator], Finished],
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    job_file = archive_job(tmp_path, threaded_emulator, engine="files_in_flight = 2\n")

    killed = gcbulk_run(job_file, threaded_emulator, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    resumed = resume_in_process(job_file, threaded_emulator)
    assert resumed.exit_code == 0, resumed.stderr
    assert_one_complete_item_per_case(threaded_emulator)
    part_puts = threaded_emulator.context.counters.part_puts
    assert part_puts and set(part_puts.values()) == {1}, f"parts sent again: {dict(part_puts)}"


async def test_an_uploader_of_the_archive_may_run_the_job(tmp_path: Path, emulator: RunningEmulator) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    outcome = await run_job(archive_job(tmp_path, emulator), emulator, FAST_ENGINE, user="reader2")
    assert outcome.failed == [] and outcome.done == 2
    assert sorted(item.title for item in items_of_archive(emulator)) == ["patient1", "patient2"]


async def test_an_archive_item_that_already_has_the_case_title_is_filled_only_when_the_user_opts_in(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    existing = await target_for(client, TargetRef(ARCHIVE_KIND, ARCHIVE)).create("patient1", None)
    job = archive_job(tmp_path, emulator)

    refused = await run_job(job, emulator, FAST_ENGINE)
    assert refused.done == 1 and [title for title, _ in refused.failed] == ["patient1"]
    assert f"archive '{ARCHIVE}' already has a archive item titled 'patient1'" not in refused.failed[0].reason
    assert f"archive '{ARCHIVE}' already has an archive item titled 'patient1'" in refused.failed[0].reason

    with Ledger.open(default_ledger_path(job), load_job(job).binding) as ledger:  # as `gcbulk retry-failed` does
        ledger.requeue_failed_cases()
    adopted = await run_job(job, emulator, dataclasses.replace(FAST_ENGINE, adopt_existing=True))
    assert adopted.failed == [] and adopted.done == 1
    items = {item.title: item for item in items_of_archive(emulator)}
    assert sorted(items) == ["patient1", "patient2"] and items["patient1"].pk == existing["pk"]
    assert set(items["patient1"].values) == SOCKETS


async def test_the_tutorial_cases_go_into_an_archive_and_come_back_out_as_the_same_cases_and_images(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    """Issue 27's round trip: gcbulk uploads the tutorial cases into an archive, exports the archive, and the exported
    tree is the same cases with the same images — byte for byte what the archive holds, voxel for voxel what was
    uploaded — which `gcbulk plan` maps back to the same sockets with the job file the export wrote."""
    import SimpleITK as sitk

    from gcbulk.emulator.objects import IMAGES_BUCKET
    from gcbulk.engine.plan.cases import PlannedCase
    from gcbulk.engine.plan.planner import Planner

    make_tutorial_tree(tmp_path / "cases", 2)
    outcome = await run_job(archive_job(tmp_path, emulator), emulator)
    assert (outcome.done, outcome.failed) == (2, [])

    summary = await anyio.to_thread.run_sync(
        lambda: Archive(
            ARCHIVE, base_url=emulator.base_url, token=emulator.tokens["editor"], ca_file=emulator.ca_file, environ={}
        ).export(tmp_path / "out")
    )

    assert summary.failures == []
    assert sorted(item.title for item in summary.items) == TITLES[:2]
    store, objects = emulator.context.store, emulator.context.objects
    source_file = {"ct-image": "ct.mha", "airway-segmentation": "seg.mha"}
    planned = {case.title: case for case in Planner(load_job(summary.job_file)).plan() if isinstance(case, PlannedCase)}
    assert sorted(planned) == TITLES[:2]
    for item in items_of_archive(emulator):
        case = planned[item.title]
        assert {planned_item.socket_slug for planned_item in case.items} == SOCKETS
        for planned_item in case.items:
            (exported,) = planned_item.files
            exported_path = summary.case_root / exported.path
            image = store.images[item.values[planned_item.socket_slug].image_pk]
            stored = objects.object_path(IMAGES_BUCKET, image.files[0].object_key).read_bytes()
            assert exported_path.read_bytes() == stored
            uploaded = tmp_path / "cases" / item.title / source_file[planned_item.socket_slug]
            assert (
                sitk.GetArrayFromImage(sitk.ReadImage(str(exported_path))).tolist()
                == sitk.GetArrayFromImage(sitk.ReadImage(str(uploaded))).tolist()
            )


def test_export_of_an_archive_job_exports_its_archive_and_reorder_says_it_needs_a_reader_study(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    make_tutorial_tree(tmp_path / "cases", 1)
    job = archive_job(tmp_path, threaded_emulator)
    token = threaded_emulator.tokens["editor"]
    assert gcbulk("run", str(job), token=token).returncode == 0

    exported = gcbulk("export", "--job", str(job), "--out", str(tmp_path / "out"), token=token)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "cases" / "patient1").is_dir() and (tmp_path / "out" / "job.toml").is_file()

    reordered = gcbulk("reorder", "--job", str(job), "--by", "title", token=token)
    assert reordered.returncode == 2, reordered.stderr
    assert f"the job file names archive '{ARCHIVE}', not a reader study" in reordered.stderr

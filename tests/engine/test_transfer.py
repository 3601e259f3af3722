"""The transfer engine end to end against the emulator: case trees become display sets with imported values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gcbulk.emulator.context import SCHEMAS
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.jobfile import load_job
from gcbulk.engine.service.plan_recording import plan_into_ledger
from gcbulk.engine.upload.server_limits import SweepGuard
from gcbulk.state.ledger import Ledger, default_ledger_path
from gcbulk.state.server_truth import ListedDisplaySet
from tests.engine.conftest import (
    FAST_ENGINE,
    load_and_plan,
    make_tutorial_tree,
    run_job,
    study_display_sets,
    values_by_socket,
    write_job,
)
from tests.imaging import make_mha, make_unimportable_mha

pytestmark = pytest.mark.emulator(import_delay_seconds=0.02)

# Both server schemas where they differ for the engine: how a display set and its values read back (its sockets, its
# value and file fields, a display set adopted as it is). The other tests are about the engine alone.
BOTH_SCHEMAS = pytest.mark.parametrize("emulator_schema", SCHEMAS)


@BOTH_SCHEMAS
async def test_the_tutorial_layout_becomes_display_sets_with_imported_images(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    outcome = await run_job(write_job(tmp_path, emulator), emulator)
    assert outcome.failed == [] and outcome.done == 3
    display_sets = await study_display_sets(client)
    assert sorted(display_sets) == ["patient1", "patient2", "patient3"]
    for display_set in display_sets.values():
        values = values_by_socket(display_set)
        assert set(values) == {"ct-image", "airway-segmentation"}
        assert all(value["image"] for value in values.values())
    assert outcome.stats is not None and outcome.stats.bytes_done == outcome.stats.bytes_total > 0


@BOTH_SCHEMAS
async def test_value_and_file_sockets_are_set(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    for n in (1, 2):
        (tmp_path / "cases" / f"patient{n}" / "age.json").write_text(str(40 + n))
        (tmp_path / "cases" / f"patient{n}" / "report.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40)
    rules = (
        '[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n\n'
        '[[rules]]\nglob = "age.json"\nsocket = "patient-age"\nvalue = true\n\n'
        '[[rules]]\nglob = "report.pdf"\nsocket = "report-pdf"\n\n'
        '[[rules]]\nglob = "seg.mha"\nsocket = "airway-segmentation"\n'
    )
    job_file = write_job(
        tmp_path, emulator, rules=rules, values='[values]\n"clinical-notes" = { source = "scanner A" }\n'
    )
    outcome = await run_job(job_file, emulator)
    assert outcome.failed == [] and outcome.done == 2
    display_sets = await study_display_sets(client)
    for n in (1, 2):
        values = values_by_socket(display_sets[f"patient{n}"])
        assert values["patient-age"]["value"] == 40 + n
        assert values["clinical-notes"]["value"] == {"source": "scanner A"}
        assert values["report-pdf"]["file"]
        assert values["ct-image"]["image"] and values["airway-segmentation"]["image"]


async def test_an_image_the_server_cannot_import_fails_its_case_with_the_reason(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    make_unimportable_mha(tmp_path / "cases" / "patient2" / "seg.mha")  # passes the plan's header checks
    outcome = await run_job(write_job(tmp_path, emulator), emulator)
    assert outcome.done == 1
    assert [title for title, _ in outcome.failed] == ["patient2"]
    reason = outcome.failed[0][1]
    assert "airway-segmentation" in reason and "could not be imported" in reason
    display_sets = await study_display_sets(client)
    assert values_by_socket(display_sets["patient2"]).keys() == {"ct-image"}
    with Ledger.open(default_ledger_path(tmp_path / "job.toml"), load_job(tmp_path / "job.toml").binding) as ledger:
        assert ledger.counts_by_state()["case"] == {"done": 1, "failed": 1}


async def test_no_session_list_is_scanned_while_a_run_waits_for_its_imports(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    # docs/gc-api.md §10: the session list has no filters and a 1000-row page holds a web worker for seconds.
    make_tutorial_tree(tmp_path / "cases", 3)
    await run_job(write_job(tmp_path, emulator), emulator)
    assert emulator.context.counters.requests["GET api:/api/v1/cases/upload-sessions/"] == 0
    assert emulator.context.counters.requests["POST api:/api/v1/cases/upload-sessions/"] == 6


async def test_plan_blocks_cases_whose_titles_name_display_sets_of_someone_else(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    await client.create_display_set("example-study", "patient2")
    job = load_job(write_job(tmp_path, emulator))
    with Ledger.open(default_ledger_path(job.job_file), job.binding, job_file=job.job_file) as ledger:
        ledger.start_study_listing()  # the study as a listing just showed it
        ledger.add_to_study_listing([ListedDisplaySet(pk="9f0c-pk", title="patient2", order=10, sockets=frozenset())])
        report = plan_into_ledger(job, ledger, catalogue=None, check_titles_against_listing=True)
    (finding,) = [f for f in report.findings if f.code == "title-exists"]
    assert finding.blocking and "'patient2' (pk 9f0c-pk)" in finding.message and "--adopt-existing" in finding.fix
    assert report.diff.blocked == ["patient2"]


@BOTH_SCHEMAS
async def test_a_display_set_that_already_has_the_case_title_is_adopted_when_the_user_opts_in(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    existing = await client.create_display_set("example-study", "patient1")
    outcome = await run_job(
        write_job(tmp_path, emulator), emulator, dataclasses.replace(FAST_ENGINE, adopt_existing=True)
    )
    assert outcome.failed == [] and outcome.done == 2
    display_sets = await study_display_sets(client)
    assert sorted(display_sets) == ["patient1", "patient2"]
    assert display_sets["patient1"]["pk"] == existing["pk"]
    assert set(values_by_socket(display_sets["patient1"])) == {"ct-image", "airway-segmentation"}


async def test_a_file_changed_after_planning_fails_its_case_and_asks_for_a_new_plan(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    job_file = write_job(tmp_path, emulator)
    load_and_plan(job_file)
    with (tmp_path / "cases" / "patient2" / "ct.mha").open("ab") as handle:
        handle.write(b"appended after planning")
    outcome = await run_job(job_file, emulator, replan=False)
    assert outcome.done == 1
    assert [title for title, _ in outcome.failed] == ["patient2"]
    assert "changed since it was planned" in outcome.failed[0][1] and "gcbulk plan" in outcome.failed[0][1]
    assert "patient2" not in await study_display_sets(client)  # nothing half-made for the changed case


async def test_a_file_that_cannot_finish_before_the_upload_sweep_is_not_started(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    cases = make_tutorial_tree(tmp_path / "cases", 2)
    make_mha(cases / "patient2" / "ct.mha", (44, 256, 512), seed=2)  # 11 MiB, after patient1's few KiB
    # Uploads that live 60 s: at the speed a few small files show, 11 MiB cannot make it.
    guard = SweepGuard(upload_lifetime_seconds=60, safety_margin_seconds=0, min_measured_bytes=1)
    config = dataclasses.replace(FAST_ENGINE, sweep_guard=guard, cases_in_flight=1, files_in_flight=1)
    outcome = await run_job(write_job(tmp_path, emulator), emulator, config)
    assert outcome.done == 1 and [title for title, _ in outcome.failed] == ["patient2"]
    assert "patient2/ct.mha: 11.0 MiB at the measured" in outcome.failed[0][1]
    assert "Grand Challenge deletes an upload 60 s after creating it" in outcome.failed[0][1]
    assert not any(
        u.filename == "ct.mha" and u.creator.username == "editor" and u.status == "Initialized"
        for u in emulator.context.store.uploads.values()
    )

"""The Python API, read as the tutorial's steps in a notebook: plan and run a job, then read the study's results."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

import gcbulk
from gcbulk.emulator.server import RunningEmulator
from tests.engine.conftest import make_tutorial_tree, write_job
from tests.results.conftest import STUDY, World

TOKEN_ENV = "GRAND_CHALLENGE_AUTHORIZATION"


@pytest.fixture
def tutorial_job(tmp_path: Path, threaded_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_tutorial_tree(tmp_path / "cases", 3)
    monkeypatch.setenv(TOKEN_ENV, threaded_emulator.tokens["editor"])
    return write_job(
        tmp_path,
        threaded_emulator,
        rules=(
            '[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n\n[[rules]]\nglob = "seg.mha"\nsocket = "airway-segmentation"\n'
        ),
    )


@pytest.fixture
def answered_study(threaded_emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    world = World(threaded_emulator, tmp_path)
    world.add_display_sets(["case2", "case10", "case1"])
    asyncio.run(world.answer_all(["reader1", "reader2"]))
    monkeypatch.setenv(TOKEN_ENV, threaded_emulator.tokens["editor"])
    return world


def _study(world: World, tmp_path: Path) -> gcbulk.ReaderStudy:
    return gcbulk.ReaderStudy(
        STUDY, base_url=world.emulator.base_url, ca_file=world.emulator.ca_file, cache=tmp_path / "cache"
    )


def test_a_notebook_plans_runs_and_checks_a_job_in_three_calls(
    tutorial_job: Path, threaded_emulator: RunningEmulator
) -> None:
    job = gcbulk.Job(tutorial_job)
    threaded_emulator.context.counters.requests.clear()

    preview = job.plan(dry_run=True)
    assert preview.diff.cases == 3 and not preview.blocking
    assert not job.settings.ledger.exists()  # a dry run writes nothing, locally
    sent = threaded_emulator.context.counters.requests
    assert sent and all(key.startswith("GET ") for key in sent), sent  # nor on the server

    outcome = job.run()
    assert outcome.failed == []
    titles = sorted(ds.title for ds in threaded_emulator.context.store.display_sets.values())
    assert titles == ["patient1", "patient2", "patient3"]
    assert job.status()["counts"]["case"] == {"done": 3}


def test_verify_finds_what_the_server_lost_and_the_next_run_sends_it(
    tutorial_job: Path, threaded_emulator: RunningEmulator
) -> None:
    job = gcbulk.Job(tutorial_job)
    job.run()
    assert job.verify().consistent
    store = threaded_emulator.context.store
    del store.display_sets[next(pk for pk, ds in store.display_sets.items() if ds.title == "patient3")]

    found = job.verify()

    assert not found.consistent and [row["title"] for row in found.as_dict()["requeued"]] == ["patient3"]
    assert job.run().failed == []
    assert sorted(ds.title for ds in store.display_sets.values()) == ["patient1", "patient2", "patient3"]


def test_plan_run_and_verify_hand_back_typed_results_that_name_each_case(
    tutorial_job: Path, threaded_emulator: RunningEmulator
) -> None:
    job = gcbulk.Job(tutorial_job)
    report = job.plan()
    assert isinstance(report, gcbulk.PlanReport) and report.diff.cases == 3
    job.run()
    store = threaded_emulator.context.store
    del store.display_sets[next(pk for pk, ds in store.display_sets.items() if ds.title == "patient2")]

    found = job.verify()

    assert isinstance(found, gcbulk.VerifyResult) and not found.consistent
    (lost,) = found.reconciliation.display_sets_gone
    assert isinstance(lost, gcbulk.CaseResult) and lost.title == "patient2" and "is gone from the server" in lost.reason
    outcome = job.run()
    assert isinstance(outcome, gcbulk.RunOutcome) and outcome.failed == [] and outcome.done == 1


def test_running_a_job_again_sends_nothing_new(tutorial_job: Path, threaded_emulator: RunningEmulator) -> None:
    gcbulk.Job(tutorial_job).run()
    uploads = len(threaded_emulator.context.store.uploads)

    again = gcbulk.Job(tutorial_job).run()

    assert again.failed == []
    assert len(threaded_emulator.context.store.uploads) == uploads
    assert len(threaded_emulator.context.store.display_sets) == 3


async def test_the_api_works_inside_a_running_event_loop_as_in_a_jupyter_cell(tutorial_job: Path) -> None:
    # A Jupyter cell runs inside an event loop: the API must not fail with "asyncio.run() cannot be called".
    outcome = gcbulk.Job(tutorial_job).run()
    assert outcome.failed == []


def test_a_job_without_a_token_says_how_to_give_one(tutorial_job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    job = gcbulk.Job(tutorial_job)
    with pytest.raises(gcbulk.ConfigurationError, match=f"no API token: set {TOKEN_ENV}"):
        job.run()


def test_answers_come_with_readable_choice_titles(answered_study: World, tmp_path: Path) -> None:
    answers = _study(answered_study, tmp_path).answers()

    assert {row["creator"] for row in answers} == {"reader1", "reader2"}
    choice = [row for row in answers if row["answer_type"] == "Choice"]
    options = {"Poor", "Fair", "Good"}
    assert choice and all(row["readable_answer"] in options for row in choice)
    assert all(row["answer"] not in options for row in choice)  # the raw answer is the option id


def test_answers_per_case_has_one_row_per_display_set_and_reader(answered_study: World, tmp_path: Path) -> None:
    rows = _study(answered_study, tmp_path).answers_per_case()

    assert sorted((row["case"], row["reader"]) for row in rows) == sorted(
        (case, reader) for case in ("case1", "case2", "case10") for reader in ("reader1", "reader2")
    )
    assert any(column.startswith("Overall quality") for column in rows[0])


def test_masks_download_into_the_export_folder(answered_study: World, tmp_path: Path) -> None:
    summary = _study(answered_study, tmp_path).download_masks(tmp_path / "results")

    assert summary.masks.failed == 0 and summary.masks.downloaded > 0
    assert list((tmp_path / "results" / "masks").rglob("*.mha"))
    with open(tmp_path / "results" / "answers.csv", newline="") as table:
        assert list(csv.DictReader(table))


def test_reorder_by_natural_title_puts_case2_before_case10(
    threaded_emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before readers start: Grand Challenge refuses to change an answered display set, its order included.
    world = World(threaded_emulator, tmp_path)
    world.add_display_sets(["case2", "case10", "case1"])
    monkeypatch.setenv(TOKEN_ENV, threaded_emulator.tokens["editor"])

    summary = _study(world, tmp_path).reorder(by="natural-title", ledger=tmp_path / "reorder.sqlite")

    assert not summary.failed
    by_order = sorted(world.display_sets, key=lambda ds: ds.order)
    assert [ds.title for ds in by_order] == ["case1", "case2", "case10"]


def test_a_study_without_a_slug_names_the_three_ways_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GCBULK_READER_STUDY", raising=False)
    with pytest.raises(gcbulk.ConfigurationError, match="--reader-study SLUG.*GCBULK_READER_STUDY.*--job"):
        gcbulk.ReaderStudy(token="x")


@pytest.mark.parametrize("imported_as", ["__mp_main__", "__main__"])
def test_an_unguarded_script_imported_again_by_a_worker_process_does_not_run_its_job_there(
    tmp_path: Path, imported_as: str
) -> None:
    """gcbulk's DICOM workers are started by forkserver, which imports the user's script again in each worker as
    ``__mp_main__`` (as ``runpy.run_path`` does here). A script without ``if __name__ == "__main__":`` would run its
    job a second time inside the worker; instead the worker stops, saying what to change. Run as itself, the script
    goes on (here to the missing job file)."""
    import runpy

    script = tmp_path / "migrate.py"
    script.write_text(f"import gcbulk\ngcbulk.Job({str(tmp_path / 'missing.toml')!r}).run()\n")
    with pytest.raises(gcbulk.ConfigurationError) as refused:
        runpy.run_path(str(script), run_name=imported_as)
    if imported_as == "__mp_main__":
        assert "imported it again" in str(refused.value) and 'if __name__ == "__main__":' in str(refused.value)
        assert str(script) in str(refused.value)
    else:
        assert "imported it again" not in str(refused.value) and "missing.toml" in str(refused.value)

"""The server is the truth: what the ledger says was made is checked against the server at the start and the end of
every run and by ``gcbulk verify``; what the server lost is made again, display sets get an explicit order in folder
order, and the uploads whose create answer was lost are found and aborted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.context import EmulatorConfig
from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator, run_emulator
from gcbulk.engine.cli import main
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.target_ref import READER_STUDY, TargetRef
from gcbulk.engine.gc.targets import target_for
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import EventLog
from gcbulk.engine.upload.reconcile import read_study
from gcbulk.engine.upload.transfer import TransferEngine
from gcbulk.state.ledger import Ledger, default_ledger_path
from tests.engine.conftest import (
    FAST_ENGINE,
    load_and_plan,
    make_tutorial_tree,
    run_job,
    study_display_sets,
    values_by_socket,
    write_job,
)

BOUND = 90
SOCKETS = {"ct-image", "airway-segmentation"}


def _deleted_in_the_web_ui(emulator: RunningEmulator, pk: str) -> None:
    """The API does not delete display sets (405); an editor can, on the site."""
    del emulator.context.store.display_sets[pk]


def _complete(display_set: dict) -> bool:
    values = values_by_socket(display_set)
    return set(values) == SOCKETS and all(v["image"] for v in values.values())


async def test_a_display_set_deleted_on_the_server_is_made_again_by_the_next_run(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    job_file = write_job(tmp_path, emulator)
    with anyio.fail_after(BOUND):
        assert (await run_job(job_file, emulator)).done == 3
        gone = (await study_display_sets(client))["patient2"]["pk"]
        _deleted_in_the_web_ui(emulator, gone)
        outcome = await run_job(job_file, emulator)
    assert [title for title, _ in outcome.requeued] == ["patient2"]
    assert f"display set {gone} is gone from the server" in outcome.requeued[0][1]
    assert outcome.done == 1 and not outcome.failed
    on_server = await study_display_sets(client)
    assert sorted(on_server) == ["patient1", "patient2", "patient3"]  # one each: nothing doubled
    assert on_server["patient2"]["pk"] != gone and all(_complete(ds) for ds in on_server.values())


async def test_a_value_the_server_lost_is_sent_again_into_the_same_display_set(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    job_file = write_job(tmp_path, emulator)
    with anyio.fail_after(BOUND):
        await run_job(job_file, emulator)
        kept = (await study_display_sets(client))["patient1"]["pk"]
        emulator.context.store.display_sets[kept].values.pop("airway-segmentation")  # the server lost it
        outcome = await run_job(job_file, emulator)
    assert [title for title, _ in outcome.requeued] == ["patient1"]
    assert "no longer has a value for airway-segmentation" in outcome.requeued[0][1]
    on_server = await study_display_sets(client)
    assert on_server["patient1"]["pk"] == kept and _complete(on_server["patient1"])


async def test_a_server_restarted_empty_gets_every_case_again(tmp_path: Path) -> None:
    """The ledger says done; the server (restarted without its state, same address) has nothing: the next run
    notices and sends everything again, instead of saying 'done' and exiting 0."""
    config = EmulatorConfig(data_dir=tmp_path / "emulator", import_delay_seconds=0.05)
    make_tutorial_tree(tmp_path / "cases", 3)
    async with run_emulator(config) as first:
        job_file = write_job(tmp_path, first)
        with anyio.fail_after(BOUND):
            assert (await run_job(job_file, first)).done == 3
        ports = _ports(first)
    async with run_emulator(config, port=ports[0], s3_port=ports[1]) as restarted:
        assert not restarted.context.store.display_sets
        with anyio.fail_after(BOUND):
            outcome = await run_job(job_file, restarted)
        assert len(outcome.requeued) == 3 and outcome.done == 3 and not outcome.failed
        async with GrandChallengeClient(
            base_url=restarted.base_url, token=restarted.tokens["editor"], ca_file=restarted.ca_file
        ) as client:
            on_server = await study_display_sets(client)
    assert sorted(on_server) == ["patient1", "patient2", "patient3"]
    assert all(_complete(ds) for ds in on_server.values())


def _ports(running: RunningEmulator) -> tuple[int, int]:
    return int(running.base_url.split(":")[2].split("/")[0]), int(running.s3_url.rsplit(":", 1)[1])


async def test_a_stored_display_set_pk_that_answers_404_leads_to_a_new_display_set_not_a_failure(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    """The display set vanishes after the pass looked at the study (here: the values were refused, the case
    failed, and the display set was deleted before the retry): its 404 makes a new display set."""
    make_tutorial_tree(tmp_path / "cases", 1)
    job_file = write_job(tmp_path, emulator)
    # The image's session is refused, and so is the values PATCH it then falls back to: the case fails.
    refuse = [
        FaultRule(match="POST /api/v1/cases/upload-sessions/", status=400, times=1),
        FaultRule(match="PATCH /api/v1/reader-studies/display-sets/*", status=400, times=1),
    ]
    emulator.context.faults.replace(refuse)
    with anyio.fail_after(BOUND):
        first = await run_job(job_file, emulator)
        assert [title for title, _ in first.failed] == ["patient1"]
        doomed = (await study_display_sets(client))["patient1"]["pk"]
        job = load_and_plan(job_file)
        with Ledger.open(default_ledger_path(job.job_file), job.binding) as ledger:
            ledger.requeue_failed_cases()
        events = EventLog(tmp_path / "events.jsonl")
        async with LedgerRunner(default_ledger_path(job.job_file), job.binding) as runner:
            # What a pass would have listed, just before the display set goes.
            study_before = await read_study(target_for(client, TargetRef(READER_STUDY, "example-study")), runner)
            _deleted_in_the_web_ui(emulator, doomed)
            engine = TransferEngine(
                client=client,
                journal=Journal(runner, events),
                target=job.target,
                config=FAST_ENGINE,
                study=study_before,
            )
            outcome = await engine.run()
        events.close()
    assert outcome.done == 1 and not outcome.failed
    on_server = await study_display_sets(client)
    assert on_server["patient1"]["pk"] != doomed and _complete(on_server["patient1"])


async def test_display_sets_are_created_in_natural_folder_order_above_the_study_highest_order(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    """Concurrent creates without an order share orders on the real server (docs/gc-api.md §10); gcbulk sends one."""
    foreign = await client.create_display_set("example-study", "someone else's", order=70)
    make_tutorial_tree(tmp_path / "cases", 12, shape=(2, 4, 4))
    job_file = write_job(tmp_path, emulator)
    with anyio.fail_after(BOUND):
        assert (await run_job(job_file, emulator, dataclasses.replace(FAST_ENGINE, cases_in_flight=12))).done == 12
    orders = {
        title: ds["order"] for title, ds in (await study_display_sets(client)).items() if title != "someone else's"
    }
    by_order = sorted(orders, key=orders.__getitem__)
    assert by_order == [f"patient{n}" for n in range(1, 13)]  # patient2 before patient10
    assert len(set(orders.values())) == 12 and min(orders.values()) > foreign["order"]


async def test_titles_that_differ_in_case_are_created_in_the_order_reorder_by_natural_title_gives(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    """Upper case does not sort before lower case: a run's display sets are already where ``gcbulk reorder --by
    natural-title`` would put them."""
    cases = make_tutorial_tree(tmp_path / "cases", 3, shape=(2, 4, 4))
    (cases / "patient2").rename(cases / "Patient2")
    (cases / "patient3").rename(cases / "patient10")
    with anyio.fail_after(BOUND):
        assert (await run_job(write_job(tmp_path, emulator), emulator)).done == 3
    orders = {title: ds["order"] for title, ds in (await study_display_sets(client)).items()}
    assert sorted(orders, key=orders.__getitem__) == ["patient1", "Patient2", "patient10"]


@pytest.mark.parametrize(
    "emulator_config",
    [{"fault_rules": (FaultRule(match="POST /api/v1/uploads/", status=502, phase="after", times=2),)}],
    indirect=True,
)
async def test_uploads_whose_create_answer_was_lost_are_aborted_by_the_run(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 2)
    with anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator)
    assert outcome.done == 2 and not outcome.failed
    assert outcome.orphans_aborted == 2
    uploads = [u async for u in client.iterate_uploads()]
    assert [u for u in uploads if u["status"] == "Initialized"] == []  # no orphan left on the server
    assert sum(u["status"] == "Aborted" for u in uploads) == 2


def test_gcbulk_verify_requeues_what_the_server_lost_and_exits_1_until_it_is_sent_again(
    tmp_path: Path,
    threaded_emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", threaded_emulator.tokens["editor"])
    monkeypatch.setenv("GCBULK_METRICS_ADDRESS", "off")
    make_tutorial_tree(tmp_path / "cases", 2)
    job_file = write_job(tmp_path, threaded_emulator)
    assert main(["run", str(job_file)]) == 0
    assert main(["verify", str(job_file)]) == 0
    assert "The server holds everything the ledger says it does." in capsys.readouterr().out
    store = threaded_emulator.context.store
    gone = next(pk for pk, ds in store.display_sets.items() if ds.title == "patient2")
    del store.display_sets[gone]  # lost by the server, not deleted through the API
    assert main(["verify", str(job_file), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["display_sets_gone"] == 1 and report["requeued"][0]["title"] == "patient2"
    with Ledger.open_readonly(default_ledger_path(job_file)) as ledger:
        assert ledger.counts_by_state()["case"] == {"done": 1, "planned": 1}
    assert main(["run", str(job_file)]) == 0
    assert main(["verify", str(job_file)]) == 0
    titles = sorted(ds.title for ds in store.display_sets.values())
    assert titles == ["patient1", "patient2"]


def test_status_shows_the_servers_upload_count_next_to_the_ledgers(
    tmp_path: Path,
    threaded_emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", threaded_emulator.tokens["editor"])
    make_tutorial_tree(tmp_path / "cases", 1)
    job_file = write_job(tmp_path, threaded_emulator)
    assert main(["plan", str(job_file)]) == 0
    with anyio.from_thread.start_blocking_portal() as portal:

        async def someone_elses_uploads() -> None:
            async with GrandChallengeClient(
                base_url=threaded_emulator.base_url,
                token=threaded_emulator.tokens["editor"],
                ca_file=threaded_emulator.ca_file,
            ) as other:
                for n in range(3):
                    await other.create_upload(f"other{n}.mha")

        portal.call(someone_elses_uploads)
    capsys.readouterr()
    assert main(["status", str(job_file)]) == 0
    assert "live uploads: 0 of this job (ledger); 3 on the server for this account" in capsys.readouterr().out
    assert main(["status", str(job_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["server_live_uploads"] == 3
    monkeypatch.delenv("GRAND_CHALLENGE_AUTHORIZATION")
    assert main(["status", str(job_file), "--offline"]) == 0
    assert "on the server" not in capsys.readouterr().out

"""The follow loop in-process: failed cases come back with growing backoff, a stop request ends it cleanly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine import settings
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import (
    AuthenticationFailed,
    ConfigurationError,
    TransportError,
)
from gcbulk.engine.service.follow import EXIT_OK, Backoff, is_fatal
from gcbulk.engine.service.job_service import JobService
from gcbulk.state.errors import LedgerBindingError
from tests.container.conftest import JsonLog, follow_settings, following, poll
from tests.imaging import make_mask, make_mha, make_unimportable_mha


def test_backoff_doubles_up_to_its_maximum_and_resets() -> None:
    backoff = Backoff(1.0, 5.0)
    assert [backoff.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_only_configuration_errors_are_fatal() -> None:
    assert is_fatal(ConfigurationError("reader study 'x' was not found"))
    assert is_fatal(AuthenticationFailed("GET", "u", 401, {"detail": "Invalid token."}))
    assert is_fatal(LedgerBindingError("ledger belongs to another job"))
    assert not is_fatal(TransportError("GET", "u", ConnectionRefusedError()))


def write_tree_and_job(tmp_path: Path, emulator: RunningEmulator) -> Path:
    for n in (1, 2):
        folder = tmp_path / "cases" / f"patient{n}"
        folder.mkdir(parents=True)
        make_mha(folder / "1-ct.mha", (4, 8, 8), seed=n)
        make_mask(folder / "2-seg.mha", (4, 8, 8), seed=n + 10)
    # Its header and data agree, so the plan passes it; the import fails. On a plain image socket: a segmentation socket's
    # voxels are checked while planning (the server's overlay rule, made locally), which would block it instead.
    make_unimportable_mha(tmp_path / "cases" / "patient2" / "2-seg.mha")
    job = tmp_path / "job.toml"
    job.write_text(
        f'reader_study = "example-study"\nbase_url = "{emulator.base_url}"\ncase_root = "cases"\n'
        f'ca_file = "{emulator.ca_file}"\n\n[[rules]]\nposition = 1\nsocket = "ct-image"\n\n'
        '[[rules]]\nposition = 2\nsocket = "generic-medical-image"\n'
    )
    return job


async def test_failed_cases_come_back_with_growing_backoff_and_finish_once_fixed(
    tmp_path: Path, emulator: RunningEmulator, json_log: JsonLog
) -> None:
    job = write_tree_and_job(tmp_path, emulator)
    resolved = follow_settings(job, emulator, GCBULK_RETRY_FAILED_AFTER="0.1", GCBULK_PROGRESS_INTERVAL="5")
    service = JobService(resolved)
    events = json_log.events

    async def scenario(running: JobService) -> int:
        async with following(running) as exit_code:

            async def failed_twice() -> bool:
                return len(events("cases_failed")) >= 2

            await poll(failed_twice, "two failed rounds")
            make_mask(tmp_path / "cases" / "patient2" / "2-seg.mha", (4, 8, 8), seed=12)

            async def all_done() -> bool:
                counts = await running.runner.run(running.runner.ledger.counts_by_state)
                return counts["case"] == {"done": 2}

            await poll(all_done, "both cases done")
            running.request_stop("test")
        return exit_code[0]

    code = await service.serve(scenario)
    assert code is None or code == EXIT_OK  # a stop with nothing in flight ends the service at once
    delays = [event["retry_in_seconds"] for event in events("cases_failed")]
    assert delays[:2] == [0.1, 0.2]  # growing
    assert "could not be imported" in events("cases_failed")[0]["examples"][0]
    assert events("failed_cases_requeued") and events("stop_requested")
    titles = sorted(ds.title for ds in emulator.context.store.display_sets.values())
    assert titles == ["patient1", "patient2"]


async def test_a_ledger_of_another_job_stops_the_service_with_a_configuration_error(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    job = write_tree_and_job(tmp_path, emulator)
    environ = {"GRAND_CHALLENGE_AUTHORIZATION": emulator.tokens["editor"], "GCBULK_METRICS_ADDRESS": "off"}
    first = settings.resolve(job, None, environ)
    other = settings.resolve(job, None, {**environ, "GCBULK_READER_STUDY": "another-study"})

    async def nothing(service: JobService) -> None:
        return None

    await JobService(first).serve(nothing)  # binds the ledger to example-study
    with pytest.raises(LedgerBindingError, match="belongs to another job"):
        await JobService(other).serve(nothing)


async def test_a_round_that_finds_nothing_new_does_not_list_the_study_and_one_with_a_new_case_does(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    """A follow-mode container waits for days: a round with nothing new must not list a study of a million display
    sets (docs/gc-api.md §10: a 1 000-row page holds a web worker for seconds)."""
    job = write_tree_and_job(tmp_path, emulator)
    make_mha(tmp_path / "cases" / "patient2" / "2-seg.mha", (4, 8, 8), seed=12)  # both cases import
    resolved = follow_settings(job, emulator)
    requests = emulator.context.counters.requests
    listing, sockets = "GET api:/api/v1/reader-studies/display-sets/", "GET api:/api/v1/components/interfaces/"

    async def scenario(running: JobService) -> None:
        assert running.runner is not None
        runner = running.runner

        def cases_done(count: int) -> Callable[[], Awaitable[bool]]:
            async def done() -> bool:
                return (await runner.run(runner.ledger.counts_by_state))["case"] == {"done": count}

            return done

        async def rounds(count: int) -> None:
            """Returns once ``count`` more rounds have begun: each plan asks for the job's two sockets afresh."""
            goal = requests[sockets] + 2 * count

            async def begun() -> bool:
                return requests[sockets] >= goal

            await poll(begun, f"{count} more rounds")

        async with following(running):
            await poll(cases_done(2), "both cases done")
            await rounds(2)
            before_idle = requests[listing]
            await rounds(3)
            assert requests[listing] == before_idle, "an idle round listed the study"
            folder = tmp_path / "cases" / "patient3"
            folder.mkdir()
            make_mha(folder / "1-ct.mha", (4, 8, 8), seed=3)
            make_mha(folder / "2-seg.mha", (4, 8, 8), seed=13)
            await poll(cases_done(3), "the new case done")
            assert requests[listing] > before_idle  # its title was checked against the study, and the pass settled
            running.request_stop("test")

    await JobService(resolved).serve(scenario)
    assert sorted(ds.title for ds in emulator.context.store.display_sets.values()) == [
        "patient1",
        "patient2",
        "patient3",
    ]


async def test_a_case_blocked_for_a_title_someone_else_holds_runs_once_that_display_set_is_gone(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    """The block a newer listing of the study can lift: follow mode lists the study again while such a case waits."""
    job = write_tree_and_job(tmp_path, emulator)
    make_mha(tmp_path / "cases" / "patient2" / "2-seg.mha", (4, 8, 8), seed=12)  # both cases import
    async with GrandChallengeClient(
        base_url=emulator.base_url, token=emulator.tokens["editor"], ca_file=emulator.ca_file
    ) as someone_else:
        theirs = (await someone_else.create_display_set("example-study", "patient2"))["pk"]

    async def scenario(running: JobService) -> None:
        assert running.runner is not None
        runner = running.runner

        def cases(wanted: dict[str, int]) -> Callable[[], Awaitable[bool]]:
            async def reached() -> bool:
                return (await runner.run(runner.ledger.counts_by_state))["case"] == wanted

            return reached

        async with following(running):
            await poll(cases({"blocked": 1, "done": 1}), "patient1 done, patient2 blocked for its title")
            del emulator.context.store.display_sets[theirs]  # deleted on the site (the API cannot delete one)
            await poll(cases({"done": 2}), "patient2 done once the display set holding its title is gone")
            running.request_stop("test")

    await JobService(follow_settings(job, emulator)).serve(scenario)
    mine = {ds.title: ds.pk for ds in emulator.context.store.display_sets.values()}
    assert sorted(mine) == ["patient1", "patient2"] and mine["patient2"] != theirs

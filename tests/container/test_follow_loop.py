"""The follow loop in-process: failed cases come back with growing backoff, a stop request ends it cleanly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine import settings
from gcbulk.engine.gc.errors import (
    AuthenticationFailed,
    ConfigurationError,
    TransportError,
)
from gcbulk.engine.service import logs
from gcbulk.engine.service.follow import EXIT_OK, Backoff, Follower, is_fatal
from gcbulk.engine.service.job_service import JobService
from gcbulk.state.errors import LedgerBindingError
from tests.imaging import make_mask, make_mha, make_truncated_mha

DEADLINE = 60.0


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
    # Its header reads, so the plan passes it; the import fails. On a plain image socket: a segmentation socket's
    # voxels are checked while planning (the server's overlay rule, made locally), which would block it instead.
    make_truncated_mha(tmp_path / "cases" / "patient2" / "2-seg.mha")
    job = tmp_path / "job.toml"
    job.write_text(
        f'reader_study = "example-study"\nbase_url = "{emulator.base_url}"\ncase_root = "cases"\n'
        f'ca_file = "{emulator.ca_file}"\n\n[[rules]]\nposition = 1\nsocket = "ct-image"\n\n'
        '[[rules]]\nposition = 2\nsocket = "generic-medical-image"\n'
    )
    return job


async def poll(condition, what: str) -> object:
    with anyio.fail_after(DEADLINE):
        while not (value := await condition()):
            await anyio.sleep(0.05)
    assert value, what
    return value


async def test_failed_cases_come_back_with_growing_backoff_and_finish_once_fixed(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    job = write_tree_and_job(tmp_path, emulator)
    resolved = settings.resolve(
        job,
        None,
        {
            "GRAND_CHALLENGE_AUTHORIZATION": emulator.tokens["editor"],
            "GCBULK_METRICS_ADDRESS": "off",
            "GCBULK_POLL_INTERVAL": "0.05",
            "GCBULK_RETRY_FAILED_AFTER": "0.1",
            "GCBULK_PROGRESS_INTERVAL": "5",
        },
    )
    stdout = io.StringIO()
    setup = logs.configure("INFO", "json", stream=stdout)
    service = JobService(resolved)

    def events(name: str) -> list[dict]:
        return [line for line in map(json.loads, stdout.getvalue().splitlines()) if line["event"] == name]

    async def scenario(running: JobService) -> int:
        async with anyio.create_task_group() as group:
            result: list[int] = []

            async def follow() -> None:
                result.append(await Follower(running).run())

            group.start_soon(follow)

            async def failed_twice() -> bool:
                return len(events("cases_failed")) >= 2

            await poll(failed_twice, "two failed rounds")
            make_mask(tmp_path / "cases" / "patient2" / "2-seg.mha", (4, 8, 8), seed=12)

            async def all_done() -> bool:
                counts = await running.runner.run(running.runner.ledger.counts_by_state)
                return counts["case"] == {"done": 2}

            await poll(all_done, "both cases done")
            running.request_stop("test")
        return result[0]

    try:
        code = await service.serve(scenario)
    finally:
        setup.close()
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

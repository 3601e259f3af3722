"""Faults injected by the emulator: the run completes, or stops with a clear reason per case; nothing is reported
done that is not."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import anyio

from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from gcbulk.emulator.sweep import sweep_expired_uploads
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.jobfile import load_job
from gcbulk.state.ledger import Ledger, default_ledger_path
from tests.engine.conftest import (
    FAST_ENGINE,
    assert_tutorial_values,
    make_tutorial_tree,
    run_job,
    study_display_sets,
    write_job,
)
from tests.imaging import make_mha

TITLES = ["patient1", "patient2", "patient3"]


def faults(emulator: RunningEmulator, *rules: FaultRule, seed: int = 3) -> None:
    emulator.context.faults.replace(list(rules), seed)


async def assert_all_imported(client: GrandChallengeClient, titles: list[str] = TITLES) -> None:
    assert sorted(await study_display_sets(client)) == sorted(titles)
    await assert_tutorial_values(client, titles)


def one_display_set_per_title(emulator: RunningEmulator) -> bool:
    return set(Counter(ds.title for ds in emulator.context.store.display_sets.values()).values()) == {1}


async def test_server_errors_and_gateway_errors_are_retried(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    faults(
        emulator,
        FaultRule(match="PUT s3", probability=0.4, status=503),
        FaultRule(match="* api", probability=0.2, status=502),
    )
    # A case makes some 30 API calls (uploads, its session, polls): at one in five refused, the default budget of a
    # case can run out by chance; this test is about every kind of call being retried, not about the budget.
    patient = dataclasses.replace(FAST_ENGINE, retry=dataclasses.replace(FAST_ENGINE.retry, attempts_per_item=40))
    outcome = await run_job(write_job(tmp_path, emulator), emulator, patient)
    assert outcome.failed == [] and outcome.done == 3 and outcome.stats.retries > 0
    faults(emulator)
    await assert_all_imported(client)


async def test_connection_resets_are_retried(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    faults(
        emulator,
        FaultRule(match="PUT s3", probability=0.4, reset="request"),
        FaultRule(match="GET api", probability=0.3, reset="response"),
    )
    outcome = await run_job(write_job(tmp_path, emulator), emulator)
    assert outcome.failed == [] and outcome.done == 3 and outcome.stats.retries > 0
    faults(emulator)
    await assert_all_imported(client)


async def test_a_429_storm_is_waited_out_as_retry_after_says(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    faults(emulator, FaultRule(match="* *", probability=0.5, status=429, retry_after="0", times=40))
    outcome = await run_job(write_job(tmp_path, emulator), emulator)
    assert outcome.failed == [] and outcome.done == 3 and outcome.stats.retries > 0
    await assert_all_imported(client)


async def test_a_create_whose_answer_was_lost_is_adopted_not_duplicated(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    # The server creates the display set (and the upload), then the gateway loses the answer.
    faults(
        emulator,
        FaultRule(match="POST /api/v1/reader-studies/display-sets/", status=502, phase="after", times=2),
        FaultRule(match="POST /api/v1/uploads/", status=502, phase="after", times=2),
        FaultRule(match="PATCH */complete-multipart-upload/", status=502, phase="after", times=2),
    )
    outcome = await run_job(write_job(tmp_path, emulator), emulator)
    assert outcome.failed == [] and outcome.done == 3
    assert one_display_set_per_title(emulator)
    await assert_all_imported(client)


async def test_an_expired_presigned_url_is_signed_again_without_failing_the_file(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    cases = make_tutorial_tree(tmp_path / "cases", 1)
    make_mha(cases / "patient1" / "ct.mha", (44, 256, 512), seed=1)  # three 5 MiB parts, presigned in one batch
    # Slow parts, one at a time, so the clock can jump an hour while URLs wait to be used.
    faults(emulator, FaultRule(match="PUT s3", latency_seconds=0.3))
    config = dataclasses.replace(FAST_ENGINE, part_size=5 * 1024**2, parts_in_flight=1)

    async def expire_urls_after_the_first_part() -> None:
        with anyio.fail_after(30):
            while not emulator.context.counters.part_puts:
                await anyio.sleep(0.01)
        emulator.context.clock.advance(3601)  # docs/gc-api.md §1: presigned URLs live 3600 s

    async with anyio.create_task_group() as group:
        group.start_soon(expire_urls_after_the_first_part)
        outcome = await run_job(write_job(tmp_path, emulator), emulator, config)
    assert outcome.failed == [] and outcome.done == 1 and outcome.stats.retries >= 1
    await assert_all_imported(client, ["patient1"])


async def test_uploads_swept_by_the_server_are_created_again(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    make_tutorial_tree(tmp_path / "cases", 3)
    job_file = write_job(tmp_path, emulator)
    # A first run whose PUTs all fail leaves initialized uploads (and no display set) behind.
    faults(emulator, FaultRule(match="PUT s3", status=503))
    broken = dataclasses.replace(FAST_ENGINE, retry=dataclasses.replace(FAST_ENGINE.retry, attempts_per_item=1))
    first = await run_job(job_file, emulator, broken)
    assert first.done == 0 and len(first.failed) == 3
    assert all("503" in reason for _, reason in first.failed)
    assert emulator.context.store.display_sets == {}  # nothing reported done, nothing half-made
    # A day later the server has swept them (docs/gc-api.md §1); the retry creates new ones.
    faults(emulator)
    emulator.context.clock.advance(25 * 3600)
    assert sweep_expired_uploads(emulator.context)
    job = load_job(job_file)
    with Ledger.open(default_ledger_path(job_file), job.binding) as ledger:
        assert len(ledger.requeue_failed_cases()) == 3
    outcome = await run_job(job_file, emulator)
    assert outcome.failed == [] and outcome.done == 3
    await assert_all_imported(client)


async def test_a_file_rewritten_while_its_parts_are_sent_is_aborted_and_its_case_failed(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    cases = make_tutorial_tree(tmp_path / "cases", 1)
    ct = cases / "patient1" / "ct.mha"
    make_mha(ct, (44, 256, 512), seed=1)  # three 5 MiB parts
    faults(emulator, FaultRule(match="PUT s3", latency_seconds=0.3))
    config = dataclasses.replace(FAST_ENGINE, part_size=5 * 1024**2, parts_in_flight=1)

    async def rewrite_after_the_first_part() -> None:
        with anyio.fail_after(30):
            while not emulator.context.counters.part_puts:
                await anyio.sleep(0.01)
        with ct.open("ab") as handle:
            handle.write(b"more data")

    async with anyio.create_task_group() as group:
        group.start_soon(rewrite_after_the_first_part)
        outcome = await run_job(write_job(tmp_path, emulator), emulator, config)
    assert outcome.done == 0 and "changed since it was planned" in outcome.failed[0][1]
    job = load_job(tmp_path / "job.toml")
    with Ledger.open(default_ledger_path(job.job_file), job.binding) as ledger:
        assert ledger.counts_by_state()["upload"].get("aborted") == 1
    assert [u.status for u in emulator.context.store.uploads.values() if u.filename == "ct.mha"] == ["Aborted"]
    assert emulator.context.store.display_sets == {}


async def _fail_at_display_sets_then_retry(tmp_path: Path, emulator: RunningEmulator, **retry_config: object):
    make_tutorial_tree(tmp_path / "cases", 2)
    job_file = write_job(tmp_path, emulator)
    faults(emulator, FaultRule(match="POST /api/v1/reader-studies/display-sets/", status=503))
    broken = dataclasses.replace(FAST_ENGINE, retry=dataclasses.replace(FAST_ENGINE.retry, attempts_per_item=1))
    first = await run_job(job_file, emulator, broken)
    assert first.done == 0 and all("503" in reason for _, reason in first.failed)
    faults(emulator)
    job = load_job(job_file)
    with Ledger.open(default_ledger_path(job_file), job.binding) as ledger:
        ledger.requeue_failed_cases()
    emulator.context.counters.reset()
    outcome = await run_job(job_file, emulator, dataclasses.replace(FAST_ENGINE, **retry_config))
    assert outcome.failed == [] and outcome.done == 2
    with Ledger.open(default_ledger_path(job_file), job.binding) as ledger:
        uploads = ledger.counts_by_state()["upload"]
    return emulator.context.counters.requests.get("POST api:/api/v1/uploads/", 0), uploads


async def test_completed_uploads_not_yet_consumed_are_reused_by_the_next_run(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    creates, uploads = await _fail_at_display_sets_then_retry(tmp_path, emulator)
    assert creates == 0 and uploads == {"consumed": 4}
    await assert_all_imported(client, ["patient1", "patient2"])


async def test_completed_uploads_too_close_to_the_sweep_are_replaced(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    creates, uploads = await _fail_at_display_sets_then_retry(tmp_path, emulator, reuse_completed_for_seconds=0.0)
    assert creates == 4 and uploads == {"consumed": 4, "expired": 4}
    await assert_all_imported(client, ["patient1", "patient2"])

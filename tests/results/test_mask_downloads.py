"""Mask downloads: cut and resumed with Range, expired signed URLs re-resolved, verified files skipped."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import numpy as np
import pytest
import SimpleITK as sitk

from gcbulk.emulator.admin_answers import create_answer
from gcbulk.emulator.objects import IMAGES_BUCKET
from gcbulk.emulator.store import Answer
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import UnsafeUrlError
from gcbulk.engine.gc.retry import RetryPolicy
from gcbulk.engine.results.export import ExportOptions, export_reader_study
from gcbulk.engine.results.masks import DownloadLimits
from gcbulk.state.results_ledger import ResultsLedger
from tests.results.conftest import (
    IMAGE_DETAIL,
    S3_GET,
    STUDY,
    World,
    faults,
    image_file_route,
    stored_object_bytes,
)

# The object store cuts the connection after 60 % of the first mask GET. Paced at 32 MiB/s, the object goes out in
# 1 MiB blocks with a pause before each, so the client has taken in the earlier blocks when the cut comes (aiohttp
# drops what is still buffered at a reset; that much is simply fetched again).
CUT_ONCE = {"match": "GET s3", "reset": "response", "reset_at_fraction": 0.6, "times": 1}
PACED = {"match": "GET s3", "bandwidth_bytes_per_second": 32 * 1024**2}


def noise_mask(world: World, seed: int) -> Path:
    """A 3 MiB mask of noise: the emulator's importer compresses what it stores, and noise stays 3 MiB."""
    pixels = np.random.default_rng(seed).integers(0, 255, size=(12, 512, 512), dtype=np.uint8)
    path = world.tmp_path / "masks-in" / f"noise-{seed}.mha"
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(pixels), str(path))
    return path


async def one_mask_answer(
    world: World, creator: str = "reader1", case: str = "case-1", seed: int = 3, large: bool = False
) -> Answer:
    display_set = next((ds for ds in world.display_sets if ds.title == case), None)
    if display_set is None:
        display_set = world.add_display_sets([case], start_order=10 * (len(world.display_sets) + 1))[0]
    mask = noise_mask(world, seed) if large else world.mask_file(f"mask-{seed}.mha", seed=seed)
    return await create_answer(
        world.context,
        creator=creator,
        question_pk=world.question("Mask").pk,
        display_set_pk=display_set.pk,
        mask_file=mask,
    )


def mask_path(out: Path, answer: Answer, world: World) -> Path:
    case = world.store.display_sets[answer.display_set_pk].title
    return out / "masks" / case / "Corrected airway mask" / f"{answer.creator.username}.mha"


def partial_files(out: Path) -> list[Path]:
    return sorted((out / ".gcbulk" / "partial").glob("*.part"))


async def test_mask_download_cut_mid_file_resumes_from_where_it_stopped(world: World, tmp_path: Path):
    answer = await one_mask_answer(world, large=True)
    expected = stored_object_bytes(world, answer.answer_image_pk)
    out = tmp_path / "out"

    async with faults(world, CUT_ONCE, PACED):
        summary = await world.export(out)

    assert summary.failures == []
    assert (summary.masks.downloaded, summary.masks.resumed) == (1, 1)
    assert mask_path(out, answer, world).read_bytes() == expected
    assert summary.masks.bytes == len(expected)  # no byte fetched twice
    assert world.requests(S3_GET) == 2
    assert partial_files(out) == []


async def test_cut_download_left_by_a_failed_run_resumes_in_the_next_run(world: World, tmp_path: Path):
    answer = await one_mask_answer(world, large=True)
    expected = stored_object_bytes(world, answer.answer_image_pk)
    out = tmp_path / "out"

    async with faults(world, CUT_ONCE, PACED):
        first = await world.export(out, retry_policy=RetryPolicy(base_delay=0.001, attempts_per_item=0))

    assert first.masks.failed == 1 and "gave up after 1 attempts" in first.failures[0]
    [partial] = partial_files(out)
    kept = partial.stat().st_size
    assert 0 < kept < len(expected)
    with ResultsLedger.open_export(out, reader_study=STUDY, base_url=world.emulator.base_url) as ledger:
        assert ledger.mask_counts() == {"failed": 1}

    second = await world.export(out)

    assert second.failures == [] and (second.masks.downloaded, second.masks.resumed) == (1, 1)
    assert second.masks.bytes == len(expected) - kept
    assert mask_path(out, answer, world).read_bytes() == expected


async def test_expired_signed_url_is_resolved_again(world: World, tmp_path: Path):
    answer = await one_mask_answer(world, large=True)
    out = tmp_path / "out"
    expiry = world.context.config.download_url_expiry_seconds

    def slow_retry(what: str, error: BaseException, delay: float) -> None:
        # The retry after the cut comes later than the signed URL lives (docs/gc-api.md §4: about 300 s).
        world.context.clock.advance(expiry + 1)

    async with faults(world, CUT_ONCE, PACED):
        summary = await world.export(out, on_retry=slow_retry)

    assert summary.failures == []
    assert summary.masks.resolved_again == 1
    assert world.requests(image_file_route()) == 2  # the file URL was resolved twice
    assert mask_path(out, answer, world).read_bytes() == stored_object_bytes(world, answer.answer_image_pk)


async def test_partial_download_of_an_object_that_changed_since_starts_over(world: World, tmp_path: Path):
    answer = await one_mask_answer(world, large=True)
    out = tmp_path / "out"
    async with faults(world, CUT_ONCE, PACED):
        await world.export(out, retry_policy=RetryPolicy(base_delay=0.001, attempts_per_item=0))
    image = world.store.images[answer.answer_image_pk]
    stored = world.context.objects.object_path(IMAGES_BUCKET, image.files[0].object_key)
    replaced = stored.read_bytes()[::-1]
    stored.write_bytes(replaced)
    os.utime(stored, ns=(stored.stat().st_atime_ns, stored.stat().st_mtime_ns + 10**9))  # a new ETag

    summary = await world.export(out)

    assert summary.failures == [] and summary.masks.downloaded == 1
    assert mask_path(out, answer, world).read_bytes() == replaced


async def test_partial_file_longer_than_the_object_is_discarded(world: World, tmp_path: Path):
    answer = await one_mask_answer(world, large=True)
    expected = stored_object_bytes(world, answer.answer_image_pk)
    out = tmp_path / "out"
    async with faults(world, CUT_ONCE, PACED):
        await world.export(out, retry_policy=RetryPolicy(base_delay=0.001, attempts_per_item=0))
    [partial] = partial_files(out)
    partial.write_bytes(b"\0" * (len(expected) + 100))

    summary = await world.export(out)

    assert summary.failures == [] and summary.masks.downloaded == 1
    assert mask_path(out, answer, world).read_bytes() == expected


async def test_verified_masks_are_skipped_and_missing_or_changed_ones_fetched_again(world: World, tmp_path: Path):
    answers = [await one_mask_answer(world, case=f"case-{n}", seed=n) for n in range(3)]
    out = tmp_path / "out"
    await world.export(out)
    mask_path(out, answers[0], world).unlink()
    changed = mask_path(out, answers[1], world)
    changed.write_bytes(bytes(len(changed.read_bytes())))  # same size, other bytes
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    world.context.counters.reset()

    summary = await world.export(out)

    assert (summary.masks.downloaded, summary.masks.skipped) == (2, 1)
    assert world.requests(S3_GET) == 2 and world.requests(IMAGE_DETAIL) == 2
    for answer in answers:
        assert mask_path(out, answer, world).read_bytes() == stored_object_bytes(world, answer.answer_image_pk)


async def test_mask_whose_object_is_gone_fails_with_the_reason_and_the_rest_goes_on(world: World, tmp_path: Path):
    gone, kept = await one_mask_answer(world, case="case-1", seed=1), await one_mask_answer(world, case="case-2")
    image = world.store.images[gone.answer_image_pk]
    world.context.objects.delete(IMAGES_BUCKET, image.files[0].object_key)

    summary = await world.export(tmp_path / "out")

    assert summary.masks.downloaded == 1 and summary.masks.failed == 1
    assert "answered 404" in summary.failures[0] and "File not found" in summary.failures[0]
    assert mask_path(tmp_path / "out", kept, world).exists()


async def test_mask_answer_still_importing_has_an_empty_cell_until_its_image_arrives(world: World, tmp_path: Path):
    world.add_display_sets(["case-1", "case-2"])
    pending = await create_answer(
        world.context, creator="reader1", question_pk=world.question("Mask").pk, display_set_pk=world.display_sets[0].pk
    )
    done = await one_mask_answer(world, creator="reader1", case="case-2")
    out = tmp_path / "out"

    first = await world.export(out)

    assert first.failures == [] and first.masks.downloaded == 1
    rows = (out / "answers_per_case.csv").read_text().splitlines()
    assert rows[1].split(",")[-3] == ""  # case-1: the Mask column of a pending answer is empty

    # The import finishes: the answer gets its image; Grand Challenge does not touch 'modified' for that.
    pending.answer_image_pk = done.answer_image_pk
    world.store.images[done.answer_image_pk].answer_study_pks.add(world.study.pk)
    second = await world.export(out)

    assert second.answers_modified == 1 and second.masks.downloaded == 1
    assert mask_path(out, pending, world).read_bytes() == stored_object_bytes(world, done.answer_image_pk)


async def test_object_store_error_is_retried(world: World, tmp_path: Path):
    answer = await one_mask_answer(world)

    async with faults(world, {"match": "GET s3", "status": 503, "times": 1}):
        summary = await world.export(tmp_path / "out")

    assert summary.failures == [] and world.requests(S3_GET) == 2
    assert mask_path(tmp_path / "out", answer, world).read_bytes() == stored_object_bytes(world, answer.answer_image_pk)


async def test_file_url_on_another_host_never_gets_the_token():
    async with GrandChallengeClient(base_url="https://127.0.0.1:9/api/v1/", token="secret-token") as client:
        with pytest.raises(UnsafeUrlError, match="refusing to send the API token to https://evil.example"):
            await client.resolve_image_file("https://evil.example/media/images/ab/cd/x/y/mask.mha")


async def test_download_that_had_every_byte_before_a_crash_is_finished_without_fetching(world: World, tmp_path: Path):
    answer = await one_mask_answer(world, large=True)
    expected = stored_object_bytes(world, answer.answer_image_pk)
    out = tmp_path / "out"
    async with faults(world, CUT_ONCE, PACED):
        await world.export(out, retry_policy=RetryPolicy(base_delay=0.001, attempts_per_item=0))
    [partial] = partial_files(out)
    partial.write_bytes(expected)  # as if the process died between the last byte and the move into masks/

    summary = await world.export(out)

    assert summary.failures == [] and summary.masks.downloaded == 1 and summary.masks.bytes == 0
    assert mask_path(out, answer, world).read_bytes() == expected


async def test_hostile_question_text_and_username_stay_inside_the_folder(world: World, tmp_path: Path):
    from gcbulk.emulator.store import User

    world.question("Mask").question_text = "../../../../tmp/evil-question"
    intruder = User(pk=world.store.next_int_pk(), username="../../evil\x00reader", token="intruder-token")
    world.store.users_by_token[intruder.token] = intruder
    world.study.reader_pks.add(intruder.pk)
    world.add_display_sets(["case-1"])
    answer = await create_answer(
        world.context,
        creator=intruder.username,
        question_pk=world.question("Mask").pk,
        display_set_pk=world.display_sets[0].pk,
        mask_file=world.mask_file(),
    )
    out = tmp_path / "out"

    summary = await world.export(out)

    assert summary.failures == [] and summary.masks.downloaded == 1
    [mask] = list((out / "masks").rglob("*.mha"))
    assert mask.resolve().is_relative_to((out / "masks" / "case-1").resolve())
    assert mask.read_bytes() == stored_object_bytes(world, answer.answer_image_pk)
    assert not Path("/tmp/evil-question").exists()


async def test_a_mask_that_trickles_past_its_deadline_fails_alone_and_the_export_finishes(world: World, tmp_path: Path):
    # Issue 14: a body sent slowly (or forever) must not hold an export: each file has an overall deadline.
    slow = await one_mask_answer(world, large=True)
    out = tmp_path / "out"
    options = ExportOptions(reader_study=STUDY, out_dir=out, download_limits=DownloadLimits(deadline_seconds=0.5))
    async with faults(world, {"match": "GET s3", "bandwidth_bytes_per_second": 256 * 1024}):
        with anyio.fail_after(60):  # 3 MiB at 256 KiB/s would take 12 s; the deadline ends it at 0.5 s
            async with world.client() as client:
                summary = await export_reader_study(client, options)
    assert summary.masks.failed == 1 and summary.masks.downloaded == 0
    (failure,) = summary.failures
    assert "not downloaded within 0.5 s" in failure and "--download-deadline" in failure
    assert not mask_path(out, slow, world).exists()
    assert (out / "answers.csv").exists()  # the tables are written all the same

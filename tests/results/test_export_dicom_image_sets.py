"""DICOM Image Sets in an export: a display set's image set and a Mask answer whose image is an image set come down
as their instances, verified and resumed by the masks' rules. Synthetic data only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom

from gcbulk.emulator.admin_answers import create_answer
from gcbulk.emulator.objects import IMAGES_BUCKET
from gcbulk.engine.jobfile import load_job
from gcbulk.engine.plan.cases import PlannedCase
from gcbulk.engine.plan.planner import plan_tree
from gcbulk.engine.results.archive_export import ArchiveExportOptions, export_archive
from gcbulk.state.results_ledger import ResultsLedger
from tests.dicom.synthetic import identified_series
from tests.engine.conftest import FAST_ENGINE, run_job, write_job
from tests.results.conftest import World


async def _image_set(world: World, tmp_path: Path, title: str = "patient1") -> str:
    """Sends one DICOM series as a DICOM Image Set with ``gcbulk run``; returns its image pk."""
    identified_series(tmp_path / "cases" / title, 3, seed=7)
    job_file = write_job(
        tmp_path, world.emulator, rules='[[rules]]\ndicom = { Modality = "CT" }\nsocket = "dicom-image-set"\n'
    )
    outcome = await run_job(job_file, world.emulator, FAST_ENGINE.replace(dicom=load_job(job_file).dicom))
    assert outcome.failed == []
    (display_set,) = [d for d in world.store.display_sets.values() if d.title == title]
    return display_set.values["dicom-image-set"].image_pk


def _stored(world: World, image_pk: str) -> dict[str, bytes]:
    image = world.store.images[image_pk]
    return {
        f"{uid}.dcm": world.context.objects.object_path(IMAGES_BUCKET, key).read_bytes()
        for uid, key in image.dicom_instances
    }


async def test_a_display_sets_image_set_is_exported_as_its_instances_and_resumed(world: World, tmp_path: Path) -> None:
    image_pk = await _image_set(world, tmp_path)
    out = tmp_path / "export"

    first = await world.export(out)

    folder = out / "images" / "patient1" / "dicom-image-set"
    stored = _stored(world, image_pk)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == stored
    assert first.masks.downloaded == 3 and first.masks.failed == 0
    assert len({pydicom.dcmread(p).SeriesInstanceUID for p in folder.iterdir()}) == 1

    (folder / min(stored)).unlink()
    (folder / sorted(stored)[1]).write_bytes(b"damaged")
    again = await world.export(out)

    assert again.masks.downloaded == 2 and again.masks.skipped == 1
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == stored
    with ResultsLedger.open_export(out, reader_study="example-study", base_url=world.emulator.base_url) as ledger:
        rows = [ledger.mask(f"images/patient1/dicom-image-set/{name}") for name in stored]
    assert [r.sha256 for r in rows] == [hashlib.sha256(stored[n]).hexdigest() for n in stored]


async def test_a_mask_answer_whose_image_is_an_image_set_comes_down_as_instances(world: World, tmp_path: Path) -> None:
    image_pk = await _image_set(world, tmp_path)
    (display_set,) = world.store.display_sets.values()
    question = world.question("Mask")
    answer = await create_answer(
        world.context,
        creator="reader1",
        question_pk=question.pk,
        display_set_pk=display_set.pk,
        mask_file=world.mask_file(),
    )
    # The admin helper imports a mask from a file; the answer is pointed at the image set afterwards, since no API
    # path makes an answer whose image is an image set (the server's model allows it).
    answer.answer_image_pk = image_pk

    summary = await world.export(tmp_path / "export")

    masks = sorted((tmp_path / "export" / "masks").rglob("*.dcm"))
    assert {p.name: p.read_bytes() for p in masks} == _stored(world, image_pk)
    assert summary.masks.failed == 0


async def test_an_archive_items_image_set_is_exported_as_instances_and_plans_back_as_one_series(
    world: World, tmp_path: Path
) -> None:
    """An archive item whose value reuses the image set (docs/gc-api.md §12: ``image`` names an existing image)."""
    image_pk = await _image_set(world, tmp_path)
    async with world.client() as client:
        archive = await client.archive_by_slug("example-archive")
        item = await client.request(
            "POST", "archives/items/", json={"archive": archive["api_url"], "title": "chest 1"}, idempotent=False
        )
        image_url = client.url_for(f"cases/images/{image_pk}/")
        await client.request(
            "PATCH",
            f"archives/items/{item['pk']}/",
            json={"values": [{"interface": "dicom-image-set", "image": image_url}]},
            idempotent=True,
        )
        out = tmp_path / "archive-export"
        exported = await export_archive(client, ArchiveExportOptions(archive="example-archive", out_dir=out))

    folder = out / "cases" / "chest 1" / "dicom-image-set"
    assert exported.failures == [] and {p.name: p.read_bytes() for p in folder.iterdir()} == _stored(world, image_pk)
    job = load_job(exported.job_file)
    assert [(r.socket, r.glob, r.group) for r in job.rules] == [
        ("dicom-image-set", "dicom-image-set/*.dcm", "dicom-series")
    ]
    (case,) = [c for c in plan_tree(job) if isinstance(c, PlannedCase)]
    assert case.title == "chest 1" and not case.blocking
    (planned,) = case.items
    assert planned.socket_slug == "dicom-image-set" and len(planned.files) == 3

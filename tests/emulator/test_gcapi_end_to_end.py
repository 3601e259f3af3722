"""The acceptance test of the emulator: the real gcapi 0.16.1 client from PyPI, unmodified, over TLS (issue 3).

It runs the reader-study tutorial's steps in their gcapi 0.16 form (docs/gc-api.md §6): add a case with a CT image and an
airway segmentation, wait for the imports, reorder, look the study up by slug, read the answers (all as the editor,
mine as a reader) and download the image of a reader's mask answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import gcapi
import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from gcbulk.emulator.server import RunningEmulator
from tests.imaging import make_mask, make_mha

STUDY = "example-study"
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """Polls ``probe`` until it returns something, or fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return found


def admin_post(emulator: RunningEmulator, path: str, body: dict) -> dict:
    """The emulator's test-only admin route, which stands in for a reader answering in the workstation."""
    response = httpx.post(emulator.admin_url + path, json=body, verify=str(emulator.ca_file))
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    return {
        "ct": make_mha(tmp_path / "ct.mha", (8, 16, 16)),
        "segmentation": make_mask(tmp_path / "airway.mha", (8, 16, 16), seed=3),
        "mask": make_mha(tmp_path / "mask.mha", (8, 16, 16), dtype="uint8", seed=5),
    }


def test_gcapi_adds_a_case_reorders_reads_answers_and_downloads_a_mask(
    threaded_emulator, open_gcapi_client, images, tmp_path
):
    emulator = threaded_emulator
    editor = open_gcapi_client("editor")
    reader = open_gcapi_client("reader1")

    created = editor.add_case_to_reader_study(
        reader_study_slug=STUDY,
        values=[
            gcapi.SocketValueSpec(socket_slug="ct-image", file=images["ct"]),
            gcapi.SocketValueSpec(socket_slug="airway-segmentation", file=images["segmentation"]),
        ],
        title="case 1",
    )
    assert isinstance(created, gcapi.models.DisplaySetPost) and created.reader_study == STUDY

    def both_imported() -> gcapi.models.DisplaySet | None:
        found = editor.reader_studies.display_sets.detail(pk=created.pk)
        return found if {value.socket.slug for value in found.values} == {"ct-image", "airway-segmentation"} else None

    display_set = eventually(both_imported, "both images of the case to be imported")
    ct_value = next(value for value in display_set.values if value.interface.slug == "ct-image")
    ct_image = editor.images.detail(api_url=ct_value.image)
    assert ct_image.shape == [8, 16, 16] and ct_image.voxel_width_mm == 0.5

    reordered = editor.reader_studies.display_sets.partial_update(pk=created.pk, order=10)
    assert reordered.order == 10

    study = editor.reader_studies.detail(slug=STUDY)
    assert study.slug == STUDY and {q.answer_type for q in study.questions} >= {"Bool", "Mask"}
    bool_question = next(q for q in study.questions if q.answer_type == "Bool")
    mask_question = next(q for q in study.questions if q.answer_type == "Mask")

    admin_post(
        emulator,
        "answers",
        {"creator": "reader1", "question": bool_question.pk, "display_set": created.pk, "answer": True},
    )
    admin_post(
        emulator,
        "answers",
        {"creator": "reader2", "question": bool_question.pk, "display_set": created.pk, "answer": False},
    )
    pending = admin_post(
        emulator,
        "answers",
        {"creator": "reader1", "question": mask_question.pk, "display_set": created.pk, "answer": None},
    )
    # The reader's mask goes the way the workstation sends it: an upload, then an upload session naming the answer.
    with images["mask"].open("rb") as mask_file:
        upload = reader.uploads.upload_fileobj(fileobj=mask_file, filename="mask.mha")
    reader(method="POST", path="cases/upload-sessions/", json={"uploads": [upload.api_url], "answer": pending["pk"]})

    def mask_imported() -> gcapi.models.Answer | None:
        answer = reader.reader_studies.answers.detail(pk=pending["pk"])
        return answer if answer.answer_image else None

    mask_answer = eventually(mask_imported, "the mask answer's image")

    every_answer = list(editor.reader_studies.answers.iterate_all(params={"question__reader_study": study.pk}))
    mine = list(reader.reader_studies.answers.mine.iterate_all(params={"question__reader_study": study.pk}))
    assert sorted(answer.creator for answer in every_answer) == ["reader1", "reader1", "reader2"]
    assert {answer.pk for answer in mine} == {a.pk for a in every_answer if a.creator == "reader1"}

    downloaded = editor.images.download(
        output_directory=tmp_path / "downloads", url=mask_answer.answer_image, filename="mask"
    )
    assert downloaded == [tmp_path / "downloads" / "mask.mha"]
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(downloaded[0]))),
        sitk.GetArrayFromImage(sitk.ReadImage(str(images["mask"]))),
    )


def test_gcapi_adds_a_case_with_an_annotation_a_json_file_and_a_dicom_image_set(open_gcapi_client, tmp_path):
    # The seed's other socket kinds (issue 15): a 2D bounding box value, a JSON file socket (gcapi uploads the value
    # as a file named by the socket's relative path) and a DICOM Image Set (gcapi de-identifies, then uploads).
    from tests.imaging import make_dicom_series

    editor = open_gcapi_client("editor")
    box = {
        "type": "2D bounding box",
        "version": {"major": 1, "minor": 0},
        "corners": [[0, 0, 0], [4, 0, 0], [4, 4, 0], [0, 4, 0]],
    }
    points = {"type": "Multiple points", "version": {"major": 1, "minor": 0}, "points": [{"point": [1, 2, 0]}]}
    created = editor.add_case_to_reader_study(
        reader_study_slug=STUDY,
        values=[
            gcapi.SocketValueSpec(socket_slug="2d-bounding-box", value=box),
            gcapi.SocketValueSpec(socket_slug="nodule-points", value=points),
            gcapi.SocketValueSpec(
                socket_slug="dicom-image-set", files=make_dicom_series(tmp_path / "dcm", 3), image_name="Chest"
            ),
        ],
        title="annotated",
    )

    def all_there() -> gcapi.models.DisplaySet | None:
        found = editor.reader_studies.display_sets.detail(pk=created.pk)
        slugs = {value.socket.slug for value in found.values}
        return found if slugs == {"2d-bounding-box", "nodule-points", "dicom-image-set"} else None

    display_set = eventually(all_there, "the annotation, the JSON file and the DICOM image set")
    by_slug = {value.socket.slug: value for value in display_set.values}
    assert by_slug["2d-bounding-box"].value == box
    assert by_slug["nodule-points"].file
    assert editor.images.detail(api_url=by_slug["dicom-image-set"].image).name == "Chest"

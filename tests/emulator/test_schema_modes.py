"""The two schema modes: ``current`` satisfies gcapi 0.16.1's response models (docs/gc-api.md §8); ``2025-11`` answers like
the older server of docs/gc-api.md §9, which those models reject.

The check is gcapi's own: every JSON shape the study side produces is passed to the pydantic model gcapi builds from
it, which raises on a missing field, a wrong type or an unknown enum value.
"""

from __future__ import annotations

import gcapi.models as models
import pydantic
import pytest

from gcbulk.emulator.admin_answers import seed_answers
from tests.emulator.study_flow import (
    STUDY_SLUG,
    add_question_of_every_type,
    create_display_set,
    example_study,
    patch_display_set,
    set_image_from_files,
    upload_file,
    wait_for_value,
)
from tests.imaging import make_mha, make_tiff


@pytest.fixture
async def world(client, emulator, tmp_path):
    """A display set with an image, a file and a JSON value, and answers of every type including an imported mask."""
    add_question_of_every_type(emulator)
    display_set = await create_display_set(client, title="case 1")
    await set_image_from_files(client, display_set["pk"], "ct-image", [make_mha(tmp_path / "ct.mha")])
    await set_image_from_files(client, display_set["pk"], "generic-overlay", [make_tiff(tmp_path / "o.tif", rgb=True)])
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4")
    upload = await upload_file(client, report)
    posted = await patch_display_set(
        client,
        display_set["pk"],
        {
            "values": [
                {"interface": "patient-age", "value": 64},
                {"interface": "report-pdf", "user_upload": upload["api_url"]},
            ]
        },
    )
    for socket in ("ct-image", "generic-overlay", "report-pdf"):
        await wait_for_value(client, display_set["pk"], socket)
    await seed_answers(emulator.context, STUDY_SLUG, creators=["reader1"], mask_file=make_mha(tmp_path / "m.mha"))
    await seed_answers(emulator.context, STUDY_SLUG, creators=["editor"], is_ground_truth=True)
    return {"display_set": display_set, "posted": posted.json()}


async def _get(client, path: str, user: str = "editor") -> dict:
    reply = await client.call("GET", client.api(path), user=user)
    assert reply.status == 200, reply.body
    return reply.json()


async def test_every_study_side_response_satisfies_gcapi_0_16_1s_models(client, emulator, world):
    study = example_study(emulator)
    pages = {
        models.PaginatedReaderStudyList: f"reader-studies/?slug={STUDY_SLUG}",
        models.PaginatedQuestionList: f"reader-studies/questions/?reader_study={study.pk}",
        models.PaginatedComponentInterfaceList: "components/interfaces/",
        models.PaginatedDisplaySetList: f"reader-studies/display-sets/?reader_study={study.pk}",
        models.PaginatedAnswerList: "reader-studies/answers/",
        models.PaginatedHyperlinkedImageList: "cases/images/",
        models.PaginatedRawImageUploadSessionList: "cases/upload-sessions/",
    }
    for model, path in pages.items():
        page = await _get(client, path)
        assert page["count"] > 0, path
        model(**page)

    models.ReaderStudy(**await _get(client, f"reader-studies/{study.pk}/"))
    display_set = models.DisplaySet(**await _get(client, f"reader-studies/display-sets/{world['display_set']['pk']}/"))
    assert {value.socket.slug for value in display_set.values} == {
        "ct-image",
        "generic-overlay",
        "patient-age",
        "report-pdf",
    }
    models.DisplaySetPost(**world["display_set"])
    models.DisplaySetPost(**world["posted"])
    images = (await _get(client, "cases/images/"))["results"]
    assert {image["color_space"] for image in images} == {"GRAY", "RGB"}
    answers = (await _get(client, "reader-studies/answers/"))["results"]
    assert any(answer["answer_image"] for answer in answers)
    models.GCAPIVersion(**await _get(client, "gcapi/"))


@pytest.mark.emulator(schema="2025-11")
class TestOlderServerSchema:
    async def test_display_sets_lack_descriptions_map_and_value_sockets(self, client, emulator, world):
        found = await _get(client, f"reader-studies/display-sets/{world['display_set']['pk']}/")
        assert "descriptions_map_safe" not in found and "descriptions_map_safe" not in world["posted"]
        assert found["values"] and all(
            "socket" not in value and "slug" in value["interface"] for value in found["values"]
        )
        assert found["title"] == "case 1"
        with pytest.raises(pydantic.ValidationError):
            models.DisplaySet(**found)

    async def test_questions_answers_and_studies_carry_the_older_fields(self, client, emulator, world):
        study = await _get(client, f"reader-studies/{example_study(emulator).pk}/")
        answer = (await _get(client, "reader-studies/answers/"))["results"][0]
        assert "algorithms" not in study["questions"][0] and "question_text" in study["questions"][0]
        assert study["title"] == study["title_safe"]
        assert "score" not in answer
        with pytest.raises(pydantic.ValidationError):
            models.Answer(**answer)

    async def test_the_version_endpoint_reports_0_13_2(self, client):
        assert (await _get(client, "gcapi/", user=None))["latest_version"] == "0.13.2"

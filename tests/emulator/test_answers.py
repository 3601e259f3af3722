"""Answers (docs/gc-api.md §4): who sees which, the filters of all and mine, every answer shape, the test-only admin route."""

from __future__ import annotations

import pytest

from gcbulk.emulator.admin_answers import AnswerSeedError, create_answer, seed_answers
from gcbulk.emulator.answer_types import ANNOTATION_KEYS, SINGULAR, answer_error
from gcbulk.emulator.store import DisplaySet, Option, Question, new_uuid
from tests.emulator.study_flow import (
    add_question_of_every_type,
    admin_answer,
    create_display_set,
    example_study,
    question_pk,
    upload_file,
)
from tests.imaging import make_mha

ANSWERS = "reader-studies/answers/"
MINE = "reader-studies/answers/mine/"


async def _answers(client, path: str, user: str, **filters: str) -> list[dict]:
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    reply = await client.call("GET", client.api(f"{path}?{query}"), user=user)
    assert reply.status == 200, reply.body
    return reply.json()["results"]


@pytest.fixture
async def answered(client, emulator):
    """Two display sets; reader1 and reader2 answered the Bool question of both, the editor gave ground truth."""
    first = await create_display_set(client)
    second = await create_display_set(client)
    bool_question = question_pk(emulator, "Bool")
    made = {}
    for ds in (first, second):
        for reader in ("reader1", "reader2"):
            made[(reader, ds["pk"])] = await admin_answer(
                client, creator=reader, question=bool_question, display_set=ds["pk"], answer=reader == "reader1"
            )
        made[("truth", ds["pk"])] = await admin_answer(
            client, creator="editor", question=bool_question, display_set=ds["pk"], answer=True, is_ground_truth=True
        )
    return first, second, made


async def test_editors_see_every_answer_of_their_study_in_creation_order(client, answered):
    _, _, made = answered
    listed = await _answers(client, ANSWERS, "editor")
    assert [a["pk"] for a in listed] == [a["pk"] for a in made.values()]


async def test_readers_see_only_their_own_answers(client, answered):
    _, _, made = answered
    listed = await _answers(client, ANSWERS, "reader1")
    assert {a["creator"] for a in listed} == {"reader1"} and len(listed) == 2
    other = made[("reader2", answered[0]["pk"])]
    assert (await client.call("GET", other["api_url"], user="reader1")).status == 404


async def test_mine_is_the_requesters_answers_without_ground_truth(client, answered):
    editor_mine = await _answers(client, MINE, "editor")
    reader_mine = await _answers(client, MINE, "reader2")
    assert editor_mine == []
    assert {a["creator"] for a in reader_mine} == {"reader2"} and len(reader_mine) == 2


async def test_filters_narrow_all_answers(client, emulator, answered):
    first, _, made = answered
    study_pk = example_study(emulator).pk
    by_display_set = await _answers(client, ANSWERS, "editor", display_set=first["pk"])
    by_creator = await _answers(client, ANSWERS, "editor", creator="reader2")
    truth = await _answers(client, ANSWERS, "editor", is_ground_truth="true")
    not_truth = await _answers(client, ANSWERS, "editor", is_ground_truth="false", question__reader_study=study_pk)
    assert {a["display_set"] for a in by_display_set} == {first["api_url"]} and len(by_display_set) == 3
    assert {a["creator"] for a in by_creator} == {"reader2"} and len(by_creator) == 2
    assert {a["is_ground_truth"] for a in truth} == {True} and len(truth) == 2
    assert len(not_truth) == 4
    assert await _answers(client, MINE, "reader1", display_set=first["pk"]) == [made[("reader1", first["pk"])]]


async def test_a_bad_filter_pk_is_the_django_filter_400(client, answered):
    reply = await client.call("GET", client.api(f"{ANSWERS}?display_set=not-a-uuid"))
    assert (reply.status, reply.json()) == (
        400,
        {"display_set": ["Select a valid choice. That choice is not one of the available choices."]},
    )


async def test_anonymous_users_see_no_answers(client, answered):
    reply = await client.call("GET", client.api(ANSWERS), user=None)
    assert (reply.status, reply.json()["count"]) == (200, 0)


async def test_an_answer_has_every_field_docs_gc_api_lists(client, emulator, answered):
    first, _, made = answered
    answer = made[("reader1", first["pk"])]
    assert set(answer) == {
        "answer",
        "api_url",
        "created",
        "creator",
        "display_set",
        "pk",
        "question",
        "modified",
        "answer_image",
        "last_edit_duration",
        "total_edit_duration",
        "is_ground_truth",
        "score",
    }
    assert answer["question"] == client.api(f"reader-studies/questions/{question_pk(emulator, 'Bool')}/")
    assert (answer["answer"], answer["answer_image"], answer["creator"]) == (True, None, "reader1")


async def test_every_answer_type_comes_back_in_its_json_shape(client, emulator):
    by_type = add_question_of_every_type(emulator)
    display_set = await create_display_set(client)
    await seed_answers(emulator.context, "example-study", creators=["reader1"], display_set_pks=[display_set["pk"]])
    store = emulator.context.store
    listed = await _answers(client, MINE, "reader1")
    shapes = {
        store.questions[a["question"].rstrip("/").rsplit("/", 1)[1]].answer_type: a["answer"]
        for a in listed
        if a["question"].rstrip("/").rsplit("/", 1)[1] in by_type.values()
    }

    def option_ids(answer_type: str) -> set[int]:
        return {option.id for option in store.questions[by_type[answer_type]].options}

    assert isinstance(shapes["Text"], str) and isinstance(shapes["Bool"], bool)
    assert isinstance(shapes["Number"], float)
    assert shapes["Choice"] in option_ids("Choice")
    assert shapes["Multiple choice"] and set(shapes["Multiple choice"]) <= option_ids("Multiple choice")
    assert shapes["Mask"] is None  # pending: its image comes from an upload session
    assert "Heading" not in shapes  # headings take no answers
    for answer_type, keys in ANNOTATION_KEYS.items():
        answer = shapes[answer_type]
        assert answer["type"] == answer_type and answer["version"] == {"major": 1, "minor": 0}
        assert set(keys) <= set(answer)
        if answer_type in SINGULAR:
            assert len(answer[keys[0]]) == 2
    box = shapes["2D bounding box"]["corners"]
    assert len(box) == 4 and all(len(corner) == 3 for corner in box)


async def test_a_mask_answer_from_an_upload_has_an_answer_image_for_its_creator_and_editors(client, emulator, tmp_path):
    display_set = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "mask.mha", dtype="uint8"), user="reader1")
    answer = await admin_answer(
        client,
        creator="reader1",
        question=question_pk(emulator, "Mask"),
        display_set=display_set["pk"],
        mask_upload=upload["api_url"],
    )
    assert set(answer["answer"]) == {"upload_session_pk"}
    assert answer["answer_image"].startswith(client.api("cases/images/"))
    assert (await client.call("GET", answer["answer_image"], user="reader1")).status == 200
    assert (await client.call("GET", answer["answer_image"], user="editor")).status == 200
    assert (await client.call("GET", answer["answer_image"], user="reader2")).status == 404


async def test_seeding_a_mask_answer_from_a_local_file(emulator, tmp_path):
    study = example_study(emulator)
    display_set_pk = new_uuid()
    emulator.context.store.display_sets[display_set_pk] = DisplaySet(
        pk=display_set_pk, reader_study_pk=study.pk, title="", order=10, created=emulator.context.clock.now()
    )
    answer = await create_answer(
        emulator.context,
        creator="reader2",
        question_pk=question_pk(emulator, "Mask"),
        display_set_pk=display_set_pk,
        mask_file=make_mha(tmp_path / "m.mha", dtype="uint8"),
    )
    image = emulator.context.store.images[answer.answer_image_pk]
    assert image.shape == [4, 8, 8] and image.creator.username == "reader2"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"creator": "nobody"}, "no user 'nobody'; use one of the seed's usernames"),
        ({"creator": "outsider"}, "outsider is neither reader nor editor of example-study"),
        (
            {"creator": "reader1", "is_ground_truth": True},
            "ground truth is entered by editors; reader1 is not an editor of example-study",
        ),
        ({"creator": "reader1", "answer": "yes"}, "a Bool answer must be a JSON bool"),
        ({"creator": "reader1", "question": "nope"}, "no question 'nope'; take a pk from reader-studies/questions/"),
        ({}, '"creator" (a username) is required'),
        ({"creator": "reader1", "display_set": "nope"}, "no display set 'nope' in example-study"),
        ({"creator": "reader1", "question": 5}, "reader-studies/questions must be a pk or an API URL, not 5"),
        (
            {"creator": "reader1", "mask_upload": "https://x/api/v1/uploads/u/"},
            "a mask belongs to a Mask question, not to a Bool question",
        ),
    ],
)
async def test_the_admin_route_refuses_answers_that_could_not_exist(client, emulator, body, detail):
    display_set = await create_display_set(client)
    body = {"question": question_pk(emulator, "Bool"), "display_set": display_set["pk"], **body}
    reply = await client.call("POST", client.admin("answers"), user=None, json_body=body)
    assert (reply.status, reply.json()) == (400, {"detail": detail})


async def test_a_second_answer_to_the_same_question_is_refused(emulator, client):
    display_set = await create_display_set(client)
    kwargs = dict(creator="reader1", question_pk=question_pk(emulator, "Number"), display_set_pk=display_set["pk"])
    await create_answer(emulator.context, **kwargs)
    with pytest.raises(AnswerSeedError, match="already answered"):
        await create_answer(emulator.context, **kwargs)


async def test_a_mask_upload_must_be_a_completed_upload_of_the_answers_creator(client, emulator, tmp_path):
    display_set = await create_display_set(client)
    foreign = await upload_file(client, make_mha(tmp_path / "mask.mha"), user="reader2")
    reply = await client.call(
        "POST",
        client.admin("answers"),
        user=None,
        json_body={
            "creator": "reader1",
            "question": question_pk(emulator, "Mask"),
            "display_set": display_set["pk"],
            "mask_upload": foreign["api_url"],
        },
    )
    assert (reply.status, reply.json()) == (400, {"detail": "mask_upload must be a Completed upload of reader1"})
    assert await _answers(client, ANSWERS, "editor") == []  # nothing is left behind


async def test_a_mask_that_cannot_be_imported_is_refused(emulator, client, tmp_path):
    display_set = await create_display_set(client)
    broken = tmp_path / "mask.mha"
    broken.write_text("not an image")
    with pytest.raises(AnswerSeedError, match="the mask could not be imported: 1 file could not be imported"):
        await create_answer(
            emulator.context,
            creator="reader1",
            question_pk=question_pk(emulator, "Mask"),
            display_set_pk=display_set["pk"],
            mask_file=broken,
        )
    assert emulator.context.store.answers == {}


@pytest.mark.parametrize(
    ("answer_type", "answer", "message"),
    [
        ("Heading", "x", "a Heading question takes no answer (null)"),
        ("Number", True, "a Number answer must be a JSON int"),
        ("Choice", 99, "a Choice answer must be one of the option ids [1, 2]"),
        ("Multiple choice", [1, 99], "a Multiple choice answer must be a list of option ids from [1, 2]"),
        ("Mask", {"pk": "x"}, 'a Mask answer must be {"upload_session_pk": "<uuid>"}'),
        ("Point", {"type": "Line"}, 'a Point answer must be an object with "type": "Point"'),
        ("Point", {"type": "Point", "point": [1, 2, 3]}, "a Point answer lacks version"),
        ("Essay", "x", "unknown answer type 'Essay'"),
    ],
)
def test_answers_that_do_not_fit_their_question_are_named(answer_type, answer, message):
    question = Question(
        pk="q",
        reader_study_pk="s",
        question_text="?",
        answer_type=answer_type,
        options=[Option(id=1, title="a"), Option(id=2, title="b")],
    )
    assert answer_error(question, answer) == message

"""Reader studies, questions and sockets (docs/gc-api.md §3): lookups by slug and pk, visibility, option ids."""

from __future__ import annotations

import re

import pytest

from gcbulk.emulator.seed import SeedError, apply_seed
from gcbulk.emulator.store import Store
from tests.emulator.study_flow import STUDY_SLUG, example_study


async def _get(client, path: str, user: str | None = "editor"):
    return await client.call("GET", client.api(path), user=user)


@pytest.mark.parametrize(("user", "count"), [("editor", 1), ("reader1", 1), ("outsider", 0), (None, 0)])
async def test_a_study_is_found_by_slug_by_its_members_only(client, user, count):
    reply = await _get(client, f"reader-studies/?slug={STUDY_SLUG}", user)
    assert (reply.status, reply.json()["count"]) == (200, count)


async def test_an_unknown_slug_finds_nothing(client):
    assert (await _get(client, "reader-studies/?slug=nope")).json()["count"] == 0


async def test_the_study_detail_is_404_for_outsiders(client, emulator):
    study = example_study(emulator)
    assert (await _get(client, f"reader-studies/{study.pk}/", "reader2")).status == 200
    reply = await _get(client, f"reader-studies/{study.pk}/", "outsider")
    assert (reply.status, reply.json()) == (404, {"detail": "No ReaderStudy matches the given query."})
    assert (await _get(client, "reader-studies/00000000-0000-0000-0000-000000000000/")).status == 404


async def test_the_study_embeds_its_questions_with_integer_option_ids(client, emulator):
    study = example_study(emulator)
    found = (await _get(client, f"reader-studies/{study.pk}/")).json()
    assert found["api_url"] == client.api(f"reader-studies/{study.pk}/")
    assert found["slug"] == STUDY_SLUG and found["title_safe"] == study.title
    choice = next(q for q in found["questions"] if q["answer_type"] == "Choice")
    assert [o["title"] for o in choice["options"]] == ["Poor", "Fair", "Good"]
    assert all(isinstance(o["id"], int) and o["default"] is False for o in choice["options"])
    mask = next(q for q in found["questions"] if q["answer_type"] == "Mask")
    assert mask["interface"]["slug"] == "airway-segmentation" and mask["image_port"] == "Main"
    assert found["questions"][0]["reader_study"] == found["api_url"]


async def test_questions_are_listed_by_study_pk(client, emulator):
    study = example_study(emulator)
    listed = (await _get(client, f"reader-studies/questions/?reader_study={study.pk}", "reader1")).json()
    assert [q["pk"] for q in listed["results"]] == study.question_pks
    one = await _get(client, f"reader-studies/questions/{study.question_pks[0]}/", "reader1")
    assert one.json() == listed["results"][0]
    assert (await _get(client, f"reader-studies/questions/?reader_study={study.pk}", "outsider")).json()["count"] == 0
    by_slug = await _get(client, f"reader-studies/questions/?reader_study={STUDY_SLUG}")
    assert by_slug.status == 400


async def test_sockets_are_found_by_slug_and_detailed_by_integer_pk(client):
    listed = (await _get(client, "components/interfaces/?slug=ct-image", "outsider")).json()
    [socket] = listed["results"]
    assert socket["slug"] == "ct-image" and socket["title"] == "CT Image" and socket["super_kind"] == "Image"
    assert isinstance(socket["pk"], int)
    assert (await _get(client, f"components/interfaces/{socket['pk']}/")).json() == socket
    assert (await _get(client, "components/interfaces/ct-image/")).status == 404
    assert (await _get(client, "components/interfaces/?slug=nope")).json()["count"] == 0


async def test_sockets_are_listed_to_anonymous_users_too(client):
    # The anonymous user is guardian's AnonymousUser, which passes IsAuthenticated (docs/gc-api.md §10).
    reply = await _get(client, "components/interfaces/?slug=ct-image", None)
    assert reply.status == 200 and reply.json()["results"][0]["slug"] == "ct-image"


async def test_every_url_is_absolute_on_the_host_the_client_used(client, emulator):
    study = example_study(emulator)
    localhost_base = client.emulator.base_url.replace("127.0.0.1", "localhost")
    reply = await client.call("GET", f"{localhost_base}reader-studies/{study.pk}/")
    found = reply.json()
    assert found["api_url"].startswith(localhost_base)
    assert all(q["api_url"].startswith(localhost_base) for q in found["questions"])


def _seed(question: dict | None = None, socket: dict | None = None) -> dict:
    return {
        "users": [{"username": "editor", "token": "t"}],
        "sockets": [{"slug": "ct-image", "kind": "Image", "super_kind": "Image", **(socket or {})}],
        "reader_studies": [
            {
                "slug": "s",
                "editors": ["editor"],
                "questions": [{"text": "q?", "answer_type": "Choice", **(question or {})}],
            }
        ],
    }


def test_a_seed_sets_optional_question_fields_and_default_options():
    store = Store()
    apply_seed(
        store,
        _seed({"options": ["a", {"title": "b", "default": True}], "answer_min_value": 2, "interface": "ct-image"}),
    )
    [question] = store.questions.values()
    assert [(o.title, o.default) for o in question.options] == [("a", False), ("b", True)]
    assert question.answer_min_value == 2 and question.interface_slug == "ct-image"


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        (_seed({"answer_type": "Essay"}), "reader_studies[0].questions[0]: answer_type 'Essay' is not one of"),
        (_seed({"interface": "nope"}), "reader_studies[0].questions[0]: no socket 'nope'; declare it under"),
        (_seed({"options": [3]}), "reader_studies[0].questions[0].options: each option is a title or"),
        (_seed(socket={"kind": "Picture"}), "sockets[0]: kind 'Picture' is not a socket kind; use one of"),
    ],
)
def test_a_seed_naming_unknown_types_sockets_or_kinds_is_refused(seed, message):
    with pytest.raises(SeedError, match=re.escape(message)):
        apply_seed(Store(), seed)

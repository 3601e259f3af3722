"""Display sets (docs/gc-api.md §3, §9): create by slug, list by study pk, PATCH/PUT values, order and title, the locks."""

from __future__ import annotations

import pytest

from tests.emulator.study_flow import (
    STUDY_SLUG,
    admin_answer,
    create_display_set,
    example_study,
    get_display_set,
    patch_display_set,
    question_pk,
    upload_file,
    wait_for_value,
)
from tests.imaging import make_mha

DISPLAY_SETS = "reader-studies/display-sets/"


async def test_create_by_slug_answers_201_with_the_post_shape(client, emulator):
    reply = await client.call("POST", client.api(DISPLAY_SETS), json_body={"reader_study": STUDY_SLUG, "title": ""})
    created = reply.json()
    assert reply.status == 201
    assert created["reader_study"] == STUDY_SLUG
    assert created["values"] == [] and created["title"] == ""
    assert created["api_url"] == client.api(f"{DISPLAY_SETS}{created['pk']}/")
    assert created["descriptions_map_safe"] == {}


async def test_orders_left_to_the_server_are_the_next_multiples_of_ten(client):
    first = await create_display_set(client)
    second = await create_display_set(client, order=0)
    explicit = await create_display_set(client, order=25)
    after = await create_display_set(client)
    assert [first["order"], second["order"], explicit["order"], after["order"]] == [10, 20, 25, 30]


@pytest.mark.parametrize("user", ["reader1", "outsider"])
async def test_creating_without_editor_rights_is_a_400_naming_the_slug(client, user):
    reply = await client.call("POST", client.api(DISPLAY_SETS), user=user, json_body={"reader_study": STUDY_SLUG})
    assert (reply.status, reply.json()) == (400, {"reader_study": [f"Object with slug={STUDY_SLUG} does not exist."]})


async def test_anonymous_create_is_401(client):
    reply = await client.call("POST", client.api(DISPLAY_SETS), user=None, json_body={"reader_study": STUDY_SLUG})
    assert reply.status == 401


async def test_values_at_create_time_are_a_bare_list_400(client):
    body = {"reader_study": STUDY_SLUG, "values": [{"interface": "patient-age", "value": 3}]}
    reply = await client.call("POST", client.api(DISPLAY_SETS), json_body=body)
    assert (reply.status, reply.json()) == (400, ["Values can only be added via update"])


async def test_list_by_study_pk_is_ordered_by_order_then_created(client, emulator):
    late = await create_display_set(client, order=50)
    early = await create_display_set(client, order=5)
    tie_first = await create_display_set(client, order=30)
    tie_second = await create_display_set(client, order=30)
    reply = await client.call(
        "GET", client.api(f"{DISPLAY_SETS}?reader_study={example_study(emulator).pk}"), user="reader1"
    )
    listed = reply.json()
    assert reply.status == 200 and listed["count"] == 4
    assert [ds["pk"] for ds in listed["results"]] == [early["pk"], tie_first["pk"], tie_second["pk"], late["pk"]]
    assert [ds["index"] for ds in listed["results"]] == [0, 1, 2, 3]


async def test_list_by_slug_is_the_django_filter_400(client):
    reply = await client.call("GET", client.api(f"{DISPLAY_SETS}?reader_study={STUDY_SLUG}"))
    assert (reply.status, reply.json()) == (
        400,
        {"reader_study": ["Select a valid choice. That choice is not one of the available choices."]},
    )


async def test_outsiders_see_no_display_sets_and_get_404_on_one(client, emulator):
    created = await create_display_set(client)
    listed = await client.call(
        "GET", client.api(f"{DISPLAY_SETS}?reader_study={example_study(emulator).pk}"), user="outsider"
    )
    detail = await client.call("GET", created["api_url"], user="outsider")
    assert listed.json()["count"] == 0
    assert (detail.status, detail.json()) == (404, {"detail": "No DisplaySet matches the given query."})


async def test_readers_may_view_but_patching_is_403(client):
    created = await create_display_set(client)
    assert (await client.call("GET", created["api_url"], user="reader1")).status == 200
    reply = await patch_display_set(client, created["pk"], {"order": 70}, user="reader1")
    assert (reply.status, reply.json()) == (403, {"detail": "You do not have permission to perform this action."})


async def test_delete_is_405(client):
    created = await create_display_set(client)
    assert (await client.call("DELETE", created["api_url"])).status == 405


async def test_patch_order_and_title_answers_200_with_the_post_shape(client):
    created = await create_display_set(client)
    reply = await patch_display_set(client, created["pk"], {"order": 70, "title": "case 1"})
    assert reply.status == 200
    assert (reply.json()["order"], reply.json()["title"], reply.json()["reader_study"]) == (70, "case 1", STUDY_SLUG)
    assert (await get_display_set(client, created["pk"]))["title_safe"] == "case 1"


async def test_patch_order_zero_takes_the_next_multiple_of_ten(client):
    created = await create_display_set(client, order=40)
    reply = await patch_display_set(client, created["pk"], {"order": 0})
    assert reply.json()["order"] == 50


async def test_non_empty_titles_are_unique_per_study(client):
    await create_display_set(client, title="case 1")
    other = await create_display_set(client)
    duplicate = await client.call(
        "POST", client.api(DISPLAY_SETS), json_body={"reader_study": STUDY_SLUG, "title": "case 1"}
    )
    renamed = await patch_display_set(client, other["pk"], {"title": "case 1"})
    error = {"non_field_errors": ["The fields title, reader_study must make a unique set."]}
    assert (duplicate.status, duplicate.json()) == (400, error)
    assert (renamed.status, renamed.json()) == (400, error)
    assert (await create_display_set(client, title=""))["title"] == ""  # empty titles may repeat


async def test_a_json_value_is_set_at_once(client):
    created = await create_display_set(client)
    reply = await patch_display_set(client, created["pk"], {"values": [{"interface": "patient-age", "value": 61}]})
    posted = reply.json()["values"]
    assert reply.status == 200
    assert [(v["interface"], v["value"], v["image_name"]) for v in posted] == [("patient-age", 61, None)]
    shown = (await get_display_set(client, created["pk"]))["values"]
    assert shown[0]["interface"]["slug"] == shown[0]["socket"]["slug"] == "patient-age"
    assert shown[0]["value"] == 61 and shown[0]["pk"] == posted[0]["pk"]


async def test_a_value_the_socket_schema_rejects_is_a_400(client):
    created = await create_display_set(client)
    reply = await patch_display_set(client, created["pk"], {"values": [{"interface": "patient-age", "value": -1}]})
    assert (reply.status, reply.json()) == (
        400,
        {"values": [{"__all__": ["JSON does not fulfill schema: instance is less than the minimum of 0"]}]},
    )


async def test_a_value_socket_without_a_value_is_a_400(client):
    created = await create_display_set(client)
    reply = await patch_display_set(client, created["pk"], {"values": [{"interface": "patient-age", "value": None}]})
    assert (reply.status, reply.json()) == (
        400,
        {"values": [{"non_field_errors": ["value is required for interface kind INT"]}]},
    )


async def test_an_unknown_socket_is_the_nested_400_of_the_real_server(client):
    created = await create_display_set(client)
    values = [{"interface": "patient-age", "value": 3}, {"interface": "nope", "value": 1}]
    reply = await patch_display_set(client, created["pk"], {"values": values})
    assert (reply.status, reply.json()) == (
        400,
        {"values": [{}, {"interface": ["Object with slug=nope does not exist."]}]},
    )
    assert (await get_display_set(client, created["pk"]))["values"] == []  # nothing of a refused PATCH is applied


async def test_user_upload_on_an_image_socket_is_refused(client, tmp_path):
    created = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    value = {"interface": "ct-image", "user_upload": upload["api_url"]}
    reply = await patch_display_set(client, created["pk"], {"values": [value]})
    message = "upload_session, user_uploads or image are required for interface kind IMG"
    assert (reply.status, reply.json()) == (400, {"values": [{"non_field_errors": [message]}]})


async def test_two_sources_for_one_socket_are_refused(client):
    created = await create_display_set(client)
    value = {"interface": "ct-image", "value": 1, "user_uploads": []}
    reply = await patch_display_set(client, created["pk"], {"values": [value]})
    assert reply.json()["values"][0]["non_field_errors"][0].startswith("You can only provide one of")


async def test_someone_elses_upload_is_an_invalid_hyperlink(client, tmp_path):
    created = await create_display_set(client)
    foreign = await upload_file(client, make_mha(tmp_path / "ct.mha"), user="reader1")
    value = {"interface": "ct-image", "user_uploads": [foreign["api_url"]]}
    reply = await patch_display_set(client, created["pk"], {"values": [value]})
    assert reply.json() == {"values": [{"user_uploads": ["Invalid hyperlink - Object does not exist."]}]}


async def test_put_removes_the_sockets_it_does_not_list(client):
    created = await create_display_set(client)
    both = [{"interface": "patient-age", "value": 3}, {"interface": "clinical-notes", "value": {"smoker": True}}]
    await patch_display_set(client, created["pk"], {"values": both})
    reply = await client.call("PUT", created["api_url"], json_body={"values": both[1:]})
    assert reply.status == 200
    assert [v["interface"] for v in reply.json()["values"]] == ["clinical-notes"]


async def test_a_file_upload_becomes_a_file_value_after_the_copy(client, emulator, tmp_path):
    created = await create_display_set(client)
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 emulator test report")
    upload = await upload_file(client, report)
    reply = await patch_display_set(
        client, created["pk"], {"values": [{"interface": "report-pdf", "user_upload": upload["api_url"]}]}
    )
    assert reply.status == 200
    value = await wait_for_value(client, created["pk"], "report-pdf")
    assert value["file"].startswith(client.emulator.base_url.replace("/api/v1/", "/media/components/"))
    assert value["file"].endswith("/report.pdf") and value["image"] is None
    assert (await client.call("GET", upload["api_url"])).status == 404  # the copied upload is consumed


async def test_once_answers_exist_every_update_is_refused(client, emulator):
    created = await create_display_set(client)
    await admin_answer(
        client, creator="reader1", question=question_pk(emulator, "Bool"), display_set=created["pk"], answer=True
    )
    for body in ({"values": [{"interface": "patient-age", "value": 3}]}, {"order": 90}):
        reply = await patch_display_set(client, created["pk"], body)
        assert (reply.status, reply.json()) == (
            400,
            ["This display set cannot be changed, as answers for it already exist."],
        )


async def test_unanswered_by_user_drops_fully_answered_display_sets(client, emulator):
    study = example_study(emulator)
    answered = await create_display_set(client)
    open_ = await create_display_set(client)
    store = emulator.context.store
    for pk in study.question_pks:
        if store.questions[pk].answer_type not in ("Heading", "Mask"):
            await admin_answer(client, creator="reader1", question=pk, display_set=answered["pk"])
    await admin_answer(
        client, creator="reader1", question=question_pk(emulator, "Mask"), display_set=answered["pk"], answer=None
    )
    url = client.api(f"{DISPLAY_SETS}?reader_study={study.pk}&unanswered_by_user=true")
    mine = await client.call("GET", url, user="reader1")
    for_reader = await client.call("GET", url + "&user=reader1", user="editor")
    for_other = await client.call("GET", url, user="reader2")
    assert [ds["pk"] for ds in mine.json()["results"]] == [open_["pk"]]
    assert [ds["pk"] for ds in for_reader.json()["results"]] == [open_["pk"]]
    assert for_other.json()["count"] == 2


async def test_unanswered_by_user_needs_a_reader_study(client):
    reply = await client.call("GET", client.api(f"{DISPLAY_SETS}?unanswered_by_user=true"))
    assert (reply.status, reply.json()) == (
        400,
        ["Please provide a reader study when filtering for unanswered display_sets."],
    )


async def test_reusing_a_visible_image_sets_it_at_once(client, emulator, tmp_path):
    source = await create_display_set(client)
    target = await create_display_set(client)
    upload = await upload_file(client, make_mha(tmp_path / "ct.mha"))
    await patch_display_set(
        client, source["pk"], {"values": [{"interface": "ct-image", "user_uploads": [upload["api_url"]]}]}
    )
    image_url = (await wait_for_value(client, source["pk"], "ct-image"))["image"]
    reply = await patch_display_set(
        client, target["pk"], {"values": [{"interface": "generic-medical-image", "image": image_url}]}
    )
    assert [v["image"] for v in reply.json()["values"]] == [image_url]
    hidden = await patch_display_set(
        client,
        target["pk"],
        {
            "values": [
                {"interface": "ct-image", "image": client.api("cases/images/00000000-0000-0000-0000-000000000000/")}
            ]
        },
    )
    assert hidden.json() == {"values": [{"image": ["Invalid hyperlink - Object does not exist."]}]}


async def test_naming_a_user_without_unanswered_by_user_is_a_400(client, emulator):
    url = client.api(f"{DISPLAY_SETS}?reader_study={example_study(emulator).pk}&user=reader1")
    reply = await client.call("GET", url)
    assert (reply.status, reply.json()) == (
        400,
        ["Specifying a user is only possible when retrieving unanswered display sets."],
    )


async def test_readers_may_not_list_another_users_unanswered_display_sets(client, emulator):
    url = client.api(f"{DISPLAY_SETS}?reader_study={example_study(emulator).pk}&unanswered_by_user=true&user=reader2")
    reply = await client.call("GET", url, user="reader1")
    assert (reply.status, reply.json()) == (
        403,
        {"detail": "You do not have permission to retrieve this user's unanswered display sets."},
    )


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"order": -1}, {"order": ["Ensure this value is greater than or equal to 0."]}),
        ({"order": "tenth"}, {"order": ["A valid integer is required."]}),
        ({"order": None}, {"order": ["This field may not be null."]}),
        ({"title": None}, {"title": ["This field may not be null."]}),
        ({"title": "x" * 256}, {"title": ["Ensure this field has no more than 255 characters."]}),
        ({"title": "a\x00b"}, {"title": ["Null characters are not allowed."]}),
        (
            {"title": "x" * 256 + "\x00"},
            {"title": ["Ensure this field has no more than 255 characters.", "Null characters are not allowed."]},
        ),
        ({"title": "  " + "x" * 255 + " "}, {}),  # DRF strips before it measures
        (
            {"values": {"interface": "patient-age"}},
            {"values": {"non_field_errors": ['Expected a list of items but got type "dict".']}},
        ),
    ],
)
async def test_bad_display_set_fields_are_400_per_field(client, body, errors):
    created = await create_display_set(client)
    reply = await patch_display_set(client, created["pk"], body)
    assert (reply.status, reply.json() if errors else {}) == (400 if errors else 200, errors)


async def test_a_title_with_a_null_character_is_refused_and_nothing_is_created(client):
    async def count() -> int:
        return (await client.call("GET", client.api(f"{DISPLAY_SETS}?limit=1"))).json()["count"]

    before = await count()
    reply = await client.call(
        "POST", client.api(DISPLAY_SETS), json_body={"reader_study": STUDY_SLUG, "title": "a\x00b"}
    )
    assert (reply.status, reply.json()) == (400, {"title": ["Null characters are not allowed."]})
    assert await count() == before


SOURCES = "['image', 'value', 'file', 'user_upload', 'upload_session', ('image_name', 'user_uploads')]"


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        ("patient-age", {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}),
        ({"value": 3}, {"interface": ["This field is required."]}),
        ({"interface": "patient-age"}, {"non_field_errors": [f"You must provide at least one of {SOURCES}."]}),
        (
            {"interface": "report-pdf", "value": {"a": 1}},
            {"non_field_errors": ["user_upload or file is required for interface kind PDF"]},
        ),
        (
            {"interface": "report-pdf", "file": "report.pdf"},
            {"file": ["The submitted data was not a file. Check the encoding type on the form."]},
        ),
        (
            {"interface": "ct-image", "user_uploads": "https://elsewhere/"},
            {"user_uploads": ['Expected a list of items but got type "str".']},
        ),
        (
            {"interface": "ct-image", "image": "https://elsewhere/images/1/"},
            {"image": ["Invalid hyperlink - No URL match."]},
        ),
        (
            {"interface": "ct-image", "upload_session": 7},
            {"upload_session": ["Incorrect type. Expected URL string, received int."]},
        ),
        (
            {"interface": "ct-image", "user_uploads": []},
            {"non_field_errors": ["upload_session, user_uploads or image are required for interface kind IMG"]},
        ),
    ],
)
async def test_each_malformed_value_gets_the_serializers_error(client, value, errors):
    created = await create_display_set(client)
    reply = await patch_display_set(client, created["pk"], {"values": [value]})
    assert (reply.status, reply.json()) == (400, {"values": [errors]})

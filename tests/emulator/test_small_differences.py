"""The small differences of docs/gc-api.md §10, as a client meets them on the real server."""

from __future__ import annotations

import re

from tests.emulator.study_flow import create_display_set, patch_display_set, set_image_from_files, wait_for_value
from tests.imaging import make_mha


async def test_only_the_bearer_keyword_authenticates_any_other_runs_anonymous(client, emulator):
    token = emulator.tokens["editor"]
    for keyword in ("Token", "Basic"):
        reply = await client.call(
            "GET", client.api("uploads/"), user=None, headers={"Authorization": f"{keyword} {token}"}
        )
        assert reply.status == 200 and reply.json()["count"] == 0  # anonymous: nothing of the editor's
        write = await client.call(
            "POST",
            client.api("uploads/"),
            user=None,
            json_body={"filename": "a.mha"},
            headers={"Authorization": f"{keyword} {token}"},
        )
        assert write.status == 401
    reply = await client.call("GET", client.api("uploads/"), user=None, headers={"Authorization": f"bEaReR {token}"})
    assert reply.status == 200


async def test_values_null_in_a_patch_is_refused(client):
    display_set = await create_display_set(client)
    reply = await patch_display_set(client, display_set["pk"], {"values": None})
    assert (reply.status, reply.json()) == (400, {"values": ["This field may not be null."]})


async def test_title_safe_strips_tags_instead_of_escaping_them(client):
    display_set = await create_display_set(client, title="case <b>one</b> & two")
    shown = (await client.call("GET", display_set["api_url"])).json()
    assert shown["title_safe"] == "case one &amp; two"


async def test_stored_file_value_names_are_sanitised(client):
    display_set = await create_display_set(client)
    upload = await client.completed_upload(b"%PDF-1.4\n", filename="my report (final)!.pdf")
    reply = await patch_display_set(
        client, display_set["pk"], {"values": [{"interface": "report-pdf", "user_upload": upload["api_url"]}]}
    )
    assert reply.status == 200
    value = await wait_for_value(client, display_set["pk"], "report-pdf")
    assert value["file"].rstrip("/").endswith("/my_report_final.pdf")


async def test_s3_upload_ids_look_like_s3s_not_hex(client):
    upload = await client.create_upload()
    upload_id = upload["s3_upload_id"]
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", upload_id) and "~" in upload_id
    assert not re.fullmatch(r"[0-9a-f]+", upload_id)
    # The id still works in every action URL and in the presigned part URLs.
    reply = await client.call(
        "PATCH", client.action_url(upload, "generate-presigned-urls"), json_body={"part_numbers": [1]}
    )
    assert reply.status == 200, reply.body


async def test_the_same_value_in_two_display_sets_is_one_value_pk(client):
    first, second = await create_display_set(client), await create_display_set(client)
    pks = []
    for display_set in (first, second):
        reply = await patch_display_set(
            client, display_set["pk"], {"values": [{"interface": "patient-age", "value": 42}]}
        )
        assert reply.status == 200
        (value,) = (await client.call("GET", display_set["api_url"])).json()["values"]
        pks.append(value["pk"])
    assert pks[0] == pks[1]


async def test_image_filters_the_emulator_has_no_data_for_narrow_the_list_to_nothing(client, tmp_path):
    display_set = await create_display_set(client)
    await set_image_from_files(client, display_set["pk"], "ct-image", [make_mha(tmp_path / "ct.mha")])
    await wait_for_value(client, display_set["pk"], "ct-image")
    assert (await client.call("GET", client.api("cases/images/"))).json()["count"] == 1
    for query in ("patient_id=P1", "study_instance_uid=1.2.3"):
        reply = await client.call("GET", client.api(f"cases/images/?{query}"))
        assert reply.status == 200 and reply.json()["count"] == 0

"""Images (docs/gc-api.md §4, §8, §9): detail and list filters, who may see them, and file downloads by 302 to the S3 host."""

from __future__ import annotations

import pytest

from tests.emulator.study_flow import (
    create_display_set,
    example_study,
    patch_display_set,
    session_for_display_set,
    set_image_from_files,
    upload_file,
    wait_for_value,
)
from tests.imaging import make_mha

IMAGES = "cases/images/"


@pytest.fixture
async def imported(client, emulator, tmp_path):
    """A ct-image imported into a display set of the example study: (display set, image JSON)."""
    display_set = await create_display_set(client)
    await set_image_from_files(client, display_set["pk"], "ct-image", [make_mha(tmp_path / "ct.mha", (4, 6, 8))])
    value = await wait_for_value(client, display_set["pk"], "ct-image")
    reply = await client.call("GET", value["image"])
    assert reply.status == 200
    return display_set, reply.json()


async def test_image_detail_has_every_field_gcapi_needs(client, imported):
    _, image = imported
    assert {
        "pk",
        "name",
        "files",
        "dicom_image_set",
        "width",
        "height",
        "depth",
        "color_space",
        "modality",
        "eye_choice",
        "stereoscopic_choice",
        "field_of_view",
        "shape_without_color",
        "shape",
        "voxel_width_mm",
        "voxel_height_mm",
        "voxel_depth_mm",
        "api_url",
        "window_center",
        "window_width",
        "segments",
    } <= set(image)
    assert image["name"] == "ct.mha" and image["shape"] == [4, 6, 8] and image["shape_without_color"] == [4, 6, 8]
    assert image["api_url"] == client.api(f"{IMAGES}{image['pk']}/")
    [file] = image["files"]
    assert file["image"] == image["pk"] and file["image_type"] == "MHD"
    assert file["file"].startswith(client.emulator.base_url.replace("/api/v1/", f"/media/images/{image['pk'][:2]}/"))


async def test_study_members_may_view_an_image_shown_to_them_and_outsiders_may_not(client, imported):
    _, image = imported
    for user, status in (("reader1", 200), ("reader2", 200), ("outsider", 404), (None, 404)):
        assert (await client.call("GET", image["api_url"], user=user)).status == status


async def test_the_list_filters_by_origin_reader_study_and_name(client, emulator, imported):
    display_set, image = imported
    session = await session_for_display_set(emulator, display_set["pk"], "ct-image")
    study = example_study(emulator).pk

    async def listed(query: str, user: str = "editor") -> list[str]:
        reply = await client.call("GET", client.api(f"{IMAGES}?{query}"), user=user)
        assert reply.status == 200, reply.body
        return [found["pk"] for found in reply.json()["results"]]

    assert await listed(f"origin={session}") == [image["pk"]]
    assert await listed(f"reader_study={study}", user="reader2") == [image["pk"]]
    assert await listed("name=ct.mha") == [image["pk"]]
    assert await listed("name=other.mha") == []
    assert await listed("", user="outsider") == []
    unknown = await client.call("GET", client.api(f"{IMAGES}?reader_study=00000000-0000-0000-0000-000000000000"))
    assert unknown.status == 400


async def test_an_image_file_redirects_its_viewer_to_a_signed_s3_url(client, emulator, imported):
    _, image = imported
    file_url = image["files"][0]["file"]
    reply = await client.call("GET", file_url, user="reader1")
    assert reply.status == 302
    location = reply.headers["Location"]
    assert location.startswith(emulator.s3_url + "/images/")
    download = await client.call("GET", location, user=None)
    key = emulator.context.store.images[image["pk"]].files[0].object_key
    stored = emulator.context.objects.object_path("images", key)
    assert download.status == 200 and download.body == stored.read_bytes()


async def test_an_image_file_supports_range_requests_on_the_s3_host(client, imported):
    _, image = imported
    location = (await client.call("GET", image["files"][0]["file"])).headers["Location"]
    part = await client.call("GET", location, user=None, headers={"Range": "bytes=0-9"})
    assert part.status == 206 and len(part.body) == 10 and part.body.startswith(b"ObjectType")


async def test_the_signed_download_url_expires(client, emulator, imported):
    _, image = imported
    location = (await client.call("GET", image["files"][0]["file"])).headers["Location"]
    emulator.context.clock.advance(emulator.context.config.download_url_expiry_seconds + 1)
    assert (await client.call("GET", location, user=None)).status == 403


async def test_image_files_are_403_without_permission_and_404_for_unknown_images(client, imported):
    _, image = imported
    file_url = image["files"][0]["file"]
    assert (await client.call("GET", file_url, user="outsider")).status == 403
    assert (await client.call("GET", file_url, user=None)).status == 403
    unknown = file_url.replace(image["pk"], "00000000-0000-0000-0000-000000000000")
    unknown_reply = await client.call("GET", unknown)
    assert (unknown_reply.status, unknown_reply.text) == (404, "Image not found.")
    other_file = await client.call("GET", file_url.rsplit("/", 1)[0] + "/other.mha")
    assert (other_file.status, other_file.text) == (404, "File not found.")


async def test_a_file_value_redirects_members_and_hides_from_outsiders(client, emulator, tmp_path):
    display_set = await create_display_set(client)
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 hello")
    upload = await upload_file(client, report)
    await patch_display_set(
        client, display_set["pk"], {"values": [{"interface": "report-pdf", "user_upload": upload["api_url"]}]}
    )
    file_url = (await wait_for_value(client, display_set["pk"], "report-pdf"))["file"]
    redirect = await client.call("GET", file_url, user="reader2")
    assert redirect.status == 302
    assert (await client.call("GET", redirect.headers["Location"], user=None)).body == b"%PDF-1.4 hello"
    assert (await client.call("GET", file_url, user="outsider")).status == 404

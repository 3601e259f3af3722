"""DICOM Image Sets in an export: their instances downloaded with the masks' resume and checksum rules
(``engine/results/masks.py``), for Mask answers whose image is an image set and for the display sets' values on
sockets of kind "DICOM Image Set".

Such an image has no ``files``: its instances are listed by ``GET cases/images/{pk}/dicom/instances/`` (what gcapi
0.16.1's ``images.download`` reads), each with a short-lived signed ``get_instance`` URL. An instance is recorded under
a stable pseudo file URL, ``<the list's URL><SOP Instance UID>.dcm``, which names the file as gcapi does
(``<uid>.dcm``); its signed URL is looked up again from the list whenever one is needed, as a mask's file URL is
resolved again after its signed URL expired.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gcbulk.engine.gc.errors import GcbulkError
from gcbulk.state.results_ledger import ImageAnswer, ResultsLedger

if TYPE_CHECKING:
    from gcbulk.engine.gc.client import GrandChallengeClient

KIND = "DICOM Image Set"
_MARK = "/dicom/instances/"
DISPLAY_SET_IMAGES = "images"  # folder of the display sets' image sets: images/<case>/<socket>/<uid>.dcm


class InstanceGone(GcbulkError):
    """The image set no longer lists the instance (the image set was replaced)."""


def _instances_url(client: GrandChallengeClient, image_pk: str) -> str:
    return client.url_for(f"cases/images/{image_pk}/dicom/instances/")


async def image_files(client: GrandChallengeClient, image: dict[str, Any]) -> list[dict[str, Any]]:
    """The files of an image as the mask downloader takes them: its ``files``, or for a DICOM Image Set one pseudo
    file per instance."""
    if not image.get("dicom_image_set"):
        # A DZI file is the viewer's tile pyramid made from a TIFF (docs/gc-api.md §4), not the image: its tiles are
        # not listed, so the XML alone would be useless: it is left out.
        return [f for f in image.get("files") or [] if f.get("image_type") != "DZI"]
    listing = _instances_url(client, str(image["pk"]))
    answer = await client.request("GET", listing)
    return [
        {"pk": str(i["sop_instance_uid"]), "file": f"{listing}{i['sop_instance_uid']}.dcm"}
        for i in answer.get("instances") or []
    ]


async def resolve(client: GrandChallengeClient, file_url: str) -> str:
    """A signed URL for an image file: through the media URL's redirect, or for an instance from the list."""
    if _MARK not in file_url or not file_url.endswith(".dcm"):
        return await client.resolve_image_file(file_url)
    listing, _, name = file_url.rpartition("/")
    uid = name.removesuffix(".dcm")
    answer = await client.request("GET", listing + "/")
    for instance in answer.get("instances") or []:
        if str(instance.get("sop_instance_uid")) == uid:
            get = instance.get("get_instance") or {}
            if get.get("headers"):
                # The signed URL is fetched without headers (masks.py); a store that needs them is not supported.
                raise InstanceGone(f"{file_url}: the image store asks for request headers, which gcbulk does not send")
            return str(get["url"])
    raise InstanceGone(f"{file_url}: the image set no longer lists instance {uid}; export again")


async def display_set_image_sets(client: GrandChallengeClient, ledger: ResultsLedger) -> list[ImageAnswer]:
    """The display sets' values on DICOM Image Set sockets, as image answers the mask downloader can fetch (their
    ledger rows are keyed ``display-set:<pk>:<socket>``)."""
    found = []
    kinds: dict[str, bool] = {}
    for display_set in ledger.iter_display_sets():
        for slug, image_pk in display_set["values"].items():
            if slug not in kinds:
                socket = await client.get_socket(slug)
                kinds[slug] = socket is not None and socket.get("kind") == KIND
            if kinds[slug] and image_pk:
                found.append(
                    ImageAnswer(
                        answer_pk=f"display-set:{display_set['pk']}:{slug}",
                        image_pk=str(image_pk),
                        creator=slug,
                        is_ground_truth=False,
                        question_pk="",
                        display_set_pk=display_set["pk"],
                        case_title=display_set["title"],
                    )
                )
    return found

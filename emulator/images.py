"""``cases/images/`` (docs/gc-api.md §4, §8) and the files behind images and file values (docs/gc-api.md §4, §9).

* ``GET cases/images/{pk}/`` and the list, filtered by ``origin`` (an upload-session pk), ``reader_study`` (repeatable:
  images shown in that study's display sets), ``archive`` (repeatable: images shown in the archive's items, §12) and
  ``name``; only images the user may view (see ``visibility``).
* ``GET /media/images/<aa>/<bb>/<image pk>/<file pk>/<name>`` with the Bearer token: 404 for an unknown image, 403
  without view permission, else **302** to a signed URL on the S3 host that expires after
  ``config.download_url_expiry_seconds`` and serves HTTP Range. gcapi follows it and drops the Authorization header
  on the way, as httpx does across origins.
* ``GET /media/components/componentinterfacevalue/<aa>/<bb>/<value pk>/<name>``: a file value of a display set or an
  archive item, likewise (404 when the user may not view it, as the server's ``serve_component_interface_value`` answers).

The media views are Django views, not DRF ones, so their errors are plain text, not JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from aiohttp import web

from gcbulk.emulator.context import context_of
from gcbulk.emulator.http import (
    bad_request,
    current_user,
    json_response,
    not_found,
    paginate,
)
from gcbulk.emulator.objects import IMAGES_BUCKET
from gcbulk.emulator.reader_studies import UUID_PK, model_choice_filter
from gcbulk.emulator.s3 import presigned_get_url
from gcbulk.emulator.serializers import DICOM_METADATA_FIELDS, image_json
from gcbulk.emulator.store import Image
from gcbulk.emulator.visibility import can_view_image, can_view_value_set


def _multiple_choice_filter(request: web.Request, name: str, choices: Collection[str]) -> set[str] | None:
    """django-filter's ModelMultipleChoiceFilter: ``?reader_study=a&reader_study=b``; a bad pk names itself."""
    raw = [value for value in request.query.getall(name, []) if value]
    if not raw:
        return None
    chosen = set()
    for value in raw:
        try:
            pk = str(uuid.UUID(value))
        except ValueError:
            pk = None
        if pk is None or pk not in choices:
            message = f"Select a valid choice. {value} is not one of the available choices."
            raise bad_request({name: [message]})
        chosen.add(pk)
    return chosen


NARROWING_FILTERS = ("job", *DICOM_METADATA_FIELDS)  # the image's DICOM fields are its filters too


async def list_images(request: web.Request) -> web.Response:
    context = context_of(request)
    store = context.store
    user = current_user(request)
    origin = model_choice_filter(request, "origin", store.upload_sessions)
    studies = _multiple_choice_filter(request, "reader_study", store.reader_studies.keys())
    archives = _multiple_choice_filter(request, "archive", store.archives.keys())
    name = request.query.get("name")
    # Filters on what the emulator does not hold (algorithm jobs, DICOM patient and study fields) narrow
    # the list as on the server, where no image matches them here (docs/gc-api.md §10), instead of being ignored.
    if any(request.query.get(key) for key in NARROWING_FILTERS):
        return paginate(request, [], lambda image: image_json(request, context, image))
    images = [
        image
        for image in store.images.values()
        if (origin is None or image.origin_session_pk == origin)
        and (studies is None or image.reader_study_pks & studies)
        and (archives is None or image.archive_pks & archives)
        and (not name or image.name == name)
        and can_view_image(store, user, image)
    ]
    images.sort(key=lambda image: image.pk)
    return paginate(request, images, lambda image: image_json(request, context, image))


def _viewable_image(request: web.Request, pk: str) -> Image:
    store = context_of(request).store
    image = store.images.get(pk)
    if image is None or not can_view_image(store, current_user(request), image):
        raise not_found("Image")
    return image


async def retrieve_image(request: web.Request) -> web.Response:
    return json_response(image_json(request, context_of(request), _viewable_image(request, request.match_info["pk"])))


def _redirect_to_object(request: web.Request, key: str) -> web.Response:
    context = context_of(request)
    if not context.objects.exists(IMAGES_BUCKET, key):
        return web.Response(status=404, text="File not found.")
    url = presigned_get_url(context, IMAGES_BUCKET, key, context.config.download_url_expiry_seconds)
    return web.Response(status=302, headers={"Location": url})


async def serve_image_file(request: web.Request) -> web.Response:
    store = context_of(request).store
    image = store.images.get(request.match_info["pk"])
    if image is None:
        return web.Response(status=404, text="Image not found.")
    if not can_view_image(store, current_user(request), image):
        return web.Response(status=403, text="Forbidden")
    key = request.path.removeprefix("/media/")
    if not any(file.object_key == key for file in image.files):
        return web.Response(status=404, text="File not found.")
    return _redirect_to_object(request, key)


async def serve_value_file(request: web.Request) -> web.Response:
    store = context_of(request).store
    value_pk = int(request.match_info["value_pk"])
    user = current_user(request)
    for value_set in store.value_sets():
        for value in value_set.values.values():
            if value.pk == value_pk and value.file_key and can_view_value_set(store, user, value_set):
                if request.path.removeprefix("/media/") != value.file_key:
                    break
                return _redirect_to_object(request, value.file_key)
    return web.Response(status=404, text="Not found.")


def setup(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/v1/cases/images/", list_images)
    router.add_get(f"/api/v1/cases/images/{UUID_PK}/", retrieve_image)
    router.add_get("/media/images/{aa:[0-9a-fA-F]{2}}/{bb:[0-9a-fA-F]{2}}/" + UUID_PK + "/{path:.+}", serve_image_file)
    router.add_get(
        "/media/components/componentinterfacevalue/{aa:[0-9a-fA-F]{2}}/{bb:[0-9a-fA-F]{2}}/{value_pk:[0-9]+}/{path:.+}",
        serve_value_file,
    )

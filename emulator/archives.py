"""Archives and archive items (docs/gc-api.md §12), as the server's ``archives/views.py`` serves them.

* ``GET archives/`` (filter: ``slug``) and ``GET archives/{pk}/``: read-only; members (editors, uploaders, users) see
  the archive, everyone else an empty list and 404.
* ``GET archives/items/`` (filter: ``archive=<pk>``, django-filter's 400 for a slug or an unknown pk) and
  ``GET archives/items/{pk}/``: the members see the items.
* ``POST archives/items/``: ``archive`` is the archive's *API URL* (a hyperlink, unlike a display set's slug), limited
  to the archives the user has ``upload_archive`` on (editors and uploaders): others get DRF's "Invalid hyperlink -
  Object does not exist.". ``values`` are refused at create ("Values can only be added via update").
* ``PATCH/PUT archives/items/{pk}/``: ``change_archiveitem`` (editors and uploaders); users get 403, outsiders 404.
  The values go through the display sets' code path (``value_requests``: the server's ``CIVSetPostSerializerMixin``),
  PUT removes the sockets it does not list. An item is always editable. DELETE is 405.
* Non-empty titles are unique per archive (a conditional UniqueConstraint, which DRF reports as a unique set); two
  concurrent creates with one title can get Django's HTML 500 instead, as display sets do.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gcbulk.emulator import importer
from gcbulk.emulator.context import Context, context_of
from gcbulk.emulator.display_sets import SERVER_ERROR_HTML
from gcbulk.emulator.http import (
    absolute_url,
    bad_request,
    current_user,
    forbidden,
    json_response,
    method_not_allowed,
    not_found,
    paginate,
    pk_from_url,
    read_json,
    require_user,
    site_url,
)
from gcbulk.emulator.reader_studies import UUID_PK, model_choice_filter
from gcbulk.emulator.serializers import sorted_values, value_json, value_post_json
from gcbulk.emulator.store import Archive, ArchiveItem, User, new_uuid
from gcbulk.emulator.value_requests import INVALID_HYPERLINK, ValueRequest
from gcbulk.emulator.value_set_fields import save_values, title_taken, validate_value_set_fields
from gcbulk.emulator.visibility import can_view_value_set, refresh_image_studies

NOT_UNIQUE = "The fields title, archive must make a unique set."
VALUES_ONLY_VIA_UPDATE = "Values can only be added via update"


# -- JSON shapes ------------------------------------------------------------------------------------------------------


def archive_url(request: web.Request, archive: Archive) -> str:
    return absolute_url(request, f"archives/{archive.pk}/")


def archive_json(request: web.Request, archive: Archive) -> dict[str, Any]:
    """``ArchiveSerializer``: pk, title, logo, description, api_url, url."""
    return {
        "pk": archive.pk,
        "title": archive.title,
        "logo": site_url(request, f"media/logos/archive/{archive.pk}/logo.png"),
        "description": archive.description,
        "api_url": archive_url(request, archive),
        "url": site_url(request, f"archives/{archive.slug}/"),
    }


def _item_common(request: web.Request, context: Context, item: ArchiveItem) -> dict[str, Any]:
    archive = context.store.archives[item.archive_pk]
    return {
        "pk": item.pk,
        "title": item.title,
        "archive": archive_url(request, archive),
        "hanging_protocol": None,
        "optional_hanging_protocols": [],
        "view_content": archive.view_content,
    }


def archive_item_json(request: web.Request, context: Context, item: ArchiveItem) -> dict[str, Any]:
    """``ArchiveItemSerializer`` (GET): each value with its full socket."""
    data = _item_common(request, context, item)
    data["values"] = [value_json(request, context, value) for value in sorted_values(context, item)]
    return data


def archive_item_post_json(request: web.Request, context: Context, item: ArchiveItem) -> dict[str, Any]:
    """``ArchiveItemPostSerializer`` (POST/PATCH/PUT responses): each value names its socket by slug."""
    data = _item_common(request, context, item)
    data["values"] = [value_post_json(request, value) for value in sorted_values(context, item)]
    return data


# -- archives ---------------------------------------------------------------------------------------------------------


async def list_archives(request: web.Request) -> web.Response:
    user = current_user(request)
    archives = [archive for archive in context_of(request).store.archives.values() if archive.can_view(user)]
    slug = request.query.get("slug")
    if slug:
        archives = [archive for archive in archives if archive.slug == slug]
    # Meta.ordering is ``created``; the store keeps insertion (seed) order, which is the creation order.
    return paginate(request, archives, lambda archive: archive_json(request, archive))


async def retrieve_archive(request: web.Request) -> web.Response:
    archive = context_of(request).store.archives.get(request.match_info["pk"])
    if archive is None or not archive.can_view(current_user(request)):
        raise not_found("Archive")
    return json_response(archive_json(request, archive))


# -- archive items ----------------------------------------------------------------------------------------------------


async def list_archive_items(request: web.Request) -> web.Response:
    context = context_of(request)
    store = context.store
    archive_pk = model_choice_filter(request, "archive", store.archives)
    user = current_user(request)
    items = [
        item
        for item in store.archive_items.values()
        if (archive_pk is None or item.archive_pk == archive_pk) and can_view_value_set(store, user, item)
    ]
    # The model has no ordering; creation order keeps pages stable while nothing is added.
    items.sort(key=lambda item: (item.created, item.pk))
    return paginate(request, items, lambda item: archive_item_json(request, context, item))


def _visible_item(request: web.Request) -> ArchiveItem:
    store = context_of(request).store
    item = store.archive_items.get(request.match_info["pk"])
    if item is None or not can_view_value_set(store, current_user(request), item):
        raise not_found("ArchiveItem")
    return item


async def retrieve_archive_item(request: web.Request) -> web.Response:
    return json_response(archive_item_json(request, context_of(request), _visible_item(request)))


def _uploadable_archive(request: web.Request, user: User, url: Any) -> Archive:
    """The HyperlinkedRelatedField over the archives the user has ``upload_archive`` on, with DRF's messages."""
    if not isinstance(url, str):
        raise ValueError(f"Incorrect type. Expected URL string, received {type(url).__name__}.")
    pk = pk_from_url(url, "archives")
    if pk is None:
        raise ValueError("Invalid hyperlink - No URL match.")
    archive = context_of(request).store.archives.get(pk)
    if archive is None or not archive.can_upload(user):
        raise ValueError(INVALID_HYPERLINK)
    return archive


def _validate_fields(
    request: web.Request, user: User, data: dict[str, Any]
) -> tuple[dict[str, Any], list[ValueRequest]]:
    """The item body's fields: a display set's (``value_set_fields``), with the archive's hyperlink as the owner."""
    return validate_value_set_fields(
        context_of(request),
        user,
        data,
        owner_field="archive",
        read_owner=lambda url: _uploadable_archive(request, user, url),
    )


def _check_unique_title(request: web.Request, archive_pk: str, title: str, own_pk: str | None) -> None:
    siblings = [other for other in context_of(request).store.archive_items.values() if other.archive_pk == archive_pk]
    if title_taken(siblings, title, own_pk):
        raise bad_request({"non_field_errors": [NOT_UNIQUE]})


async def create_archive_item(request: web.Request) -> web.Response:
    user = require_user(request)
    context = context_of(request)
    data = await read_json(request)
    if data.get("archive") is None:
        # ``required=False`` on the field, but the model needs an archive: the server cannot save without one.
        raise bad_request({"archive": ["This field is required."]})
    attrs, _ = _validate_fields(request, user, {key: value for key, value in data.items() if key != "values"})
    archive: Archive = attrs["archive"]
    title = attrs.get("title", "")
    _check_unique_title(request, archive.pk, title, None)
    if data.get("values"):
        raise bad_request([VALUES_ONLY_VIA_UPDATE])
    # As for display sets (docs/gc-api.md §10): the title check and the insert are separate round trips, so a
    # concurrent duplicate passes the check and fails on ``unique_archive_item_title`` with Django's HTML 500.
    await asyncio.sleep(context.config.create_round_trip_seconds)
    if title_taken((other for other in context.store.archive_items.values() if other.archive_pk == archive.pk), title):
        return web.Response(status=500, text=SERVER_ERROR_HTML, content_type="text/html")
    item = ArchiveItem(pk=new_uuid(), archive_pk=archive.pk, title=title, created=context.clock.now())
    context.store.archive_items[item.pk] = item
    return json_response(archive_item_post_json(request, context, item), status=201)


async def _update_archive_item(request: web.Request, *, partial: bool) -> web.Response:
    user = require_user(request)
    context = context_of(request)
    item = _visible_item(request)
    if not context.store.archives[item.archive_pk].can_upload(user):
        raise forbidden()
    attrs, values = _validate_fields(request, user, await read_json(request))
    archive_pk = attrs["archive"].pk if "archive" in attrs else item.archive_pk
    _check_unique_title(request, archive_pk, attrs.get("title", item.title), item.pk)
    if archive_pk != item.archive_pk:
        item.archive_pk = archive_pk
        for value in item.values.values():
            refresh_image_studies(context.store, value.image_pk)
    if "title" in attrs:
        item.title = attrs["title"]
    save_values(context, importer.worker_of(request), user, item, values, partial=partial)
    return json_response(archive_item_post_json(request, context, item))


async def partial_update_archive_item(request: web.Request) -> web.Response:
    return await _update_archive_item(request, partial=True)


async def update_archive_item(request: web.Request) -> web.Response:
    return await _update_archive_item(request, partial=False)


async def delete_archive_item(request: web.Request) -> web.Response:
    raise method_not_allowed("DELETE")


def setup(app: web.Application) -> None:
    importer.install(app)
    router = app.router
    router.add_get("/api/v1/archives/", list_archives)
    router.add_get(f"/api/v1/archives/{UUID_PK}/", retrieve_archive)
    router.add_get("/api/v1/archives/items/", list_archive_items)
    router.add_post("/api/v1/archives/items/", create_archive_item)
    detail = f"/api/v1/archives/items/{UUID_PK}/"
    router.add_get(detail, retrieve_archive_item)
    router.add_patch(detail, partial_update_archive_item)
    router.add_put(detail, update_archive_item)
    router.add_delete(detail, delete_archive_item)

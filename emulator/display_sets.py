"""``reader-studies/display-sets/`` (docs/gc-api.md §3, §9): list, retrieve, create, PATCH, PUT; DELETE is 405.

* The list filters by ``reader_study=<pk>`` (a slug or an unknown pk → django-filter's 400) and is ordered by
  ``order, created``; ``unanswered_by_user=true`` (with a ``reader_study``, optionally ``user=<username>``) drops the
  display sets the user has answered every answerable question of.
* Create takes the study's *slug* and needs editor rights (others: ``{"reader_study": ["Object with slug=… does not
  exist."]}``); values are refused (``["Values can only be added via update"]``); ``order`` 0 or omitted → the next
  multiple of 10.
* PATCH/PUT change ``values``, ``order``, ``title``; PUT also removes the sockets it does not list. Readers get 403,
  outsiders 404. Once an answer refers to the display set, every update is a 400 (the serializer checks
  ``is_editable`` before anything else is saved). Non-empty titles are unique per study.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gcbulk.emulator import importer
from gcbulk.emulator.answer_types import NON_ANSWERABLE_TYPES
from gcbulk.emulator.context import context_of
from gcbulk.emulator.http import (
    SERVICE_VARIANT,
    bad_request,
    current_user,
    forbidden,
    json_response,
    method_not_allowed,
    not_found,
    paginate,
    read_json,
    require_user,
)
from gcbulk.emulator.reader_studies import UUID_PK, model_choice_filter
from gcbulk.emulator.serializers import (
    display_set_indexes,
    display_set_json,
    display_set_post_json,
    ordered_display_sets,
)
from gcbulk.emulator.store import DisplaySet, ReaderStudy, User, new_uuid
from gcbulk.emulator.value_set_fields import save_values, title_taken, validate_value_set_fields
from gcbulk.emulator.values import (
    LOCKED_BY_ANSWERS,
    is_editable,
    next_display_set_order,
)
from gcbulk.emulator.visibility import can_view_display_set

NOT_UNIQUE = "The fields title, reader_study must make a unique set."
# Django's default 500 page (DEBUG off): what an unhandled IntegrityError answers, not JSON.
SERVER_ERROR_HTML = (
    '\n<!doctype html>\n<html lang="en">\n<head>\n  <title>Server Error (500)</title>\n</head>\n<body>\n'
    "  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n"
)
MAX_ORDER = 2147483647  # PositiveIntegerField


def _truthy(raw: str) -> bool:
    """``strtobool`` as the view uses it."""
    value = raw.strip().lower()
    if value in ("y", "yes", "t", "true", "on", "1"):
        return True
    if value in ("n", "no", "f", "false", "off", "0"):
        return False
    raise bad_request({"detail": f"invalid truth value {raw!r}"})


def _unanswered_filter(request: web.Request, display_sets: list[DisplaySet], study_pk: str | None) -> list[DisplaySet]:
    store = context_of(request).store
    unanswered = _truthy(request.query.get("unanswered_by_user", "False"))
    username = request.query.get("user")
    if username and not unanswered:
        raise bad_request(["Specifying a user is only possible when retrieving unanswered display sets."])
    if not unanswered:
        return display_sets
    if study_pk is None:
        raise bad_request(["Please provide a reader study when filtering for unanswered display_sets."])
    study = store.reader_studies[study_pk]
    user = current_user(request)
    if username:
        target = store.user_by_username(username)
        if target is None:
            raise not_found()
        if user is None or (target.pk != user.pk and not study.can_change(user)):
            raise forbidden("You do not have permission to retrieve this user's unanswered display sets.")
        user = target
    answerable = {pk for pk in study.question_pks if store.questions[pk].answer_type not in NON_ANSWERABLE_TYPES}
    counts: dict[str, int] = {}
    for answer in store.answers.values():
        if (
            user is not None
            and answer.creator.pk == user.pk
            and not answer.is_ground_truth
            and answer.question_pk in answerable
            and answer.display_set_pk
        ):
            counts[answer.display_set_pk] = counts.get(answer.display_set_pk, 0) + 1
    return [ds for ds in display_sets if counts.get(ds.pk, 0) < len(answerable)]


async def list_display_sets(request: web.Request) -> web.Response:
    context = context_of(request)
    store = context.store
    study_pk = model_choice_filter(request, "reader_study", store.reader_studies)
    user = current_user(request)
    studies = [study_pk] if study_pk else [s.pk for s in store.reader_studies.values()]
    display_sets: list[DisplaySet] = []
    indexes: dict[str, int] = {}
    for pk in studies:
        if store.reader_studies[pk].can_view(user):
            ordered = ordered_display_sets(context, pk)
            indexes.update(display_set_indexes(ordered))
            display_sets.extend(ordered)
    display_sets.sort(key=lambda ds: (ds.order, ds.created))  # one ordering across studies, as the queryset has
    display_sets = _unanswered_filter(request, display_sets, study_pk)
    return paginate(request, display_sets, lambda ds: display_set_json(request, context, ds, indexes[ds.pk]))


def _visible_display_set(request: web.Request) -> DisplaySet:
    store = context_of(request).store
    display_set = store.display_sets.get(request.match_info["pk"])
    if display_set is None or not can_view_display_set(store, current_user(request), display_set):
        raise not_found("DisplaySet")
    return display_set


async def retrieve_display_set(request: web.Request) -> web.Response:
    return json_response(display_set_json(request, context_of(request), _visible_display_set(request)))


def _editable_study(request: web.Request, user: User, slug: Any) -> ReaderStudy:
    """The SlugRelatedField over the studies the user may change; any other slug "does not exist"."""
    if not isinstance(slug, str):
        raise ValueError("Invalid value.")
    study = context_of(request).store.reader_study_by_slug(slug)
    if study is None or not study.can_change(user):
        raise ValueError(f"Object with slug={slug} does not exist.")
    return study


def _drf_order(raw: Any) -> int:
    """DRF's IntegerField for a PositiveIntegerField: ints and integral strings; its messages on anything else."""
    if raw is None:
        raise ValueError("This field may not be null.")
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise ValueError("A valid integer is required.")
    try:
        number = int(str(raw).strip())
    except ValueError:
        raise ValueError("A valid integer is required.") from None
    if number < 0:
        raise ValueError("Ensure this value is greater than or equal to 0.")
    if number > MAX_ORDER:
        raise ValueError(f"Ensure this value is less than or equal to {MAX_ORDER}.")
    return number


def _validate_fields(request: web.Request, user: User, data: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The display-set body's fields (one code path with an archive item's: ``value_set_fields``)."""
    return validate_value_set_fields(
        context_of(request),
        user,
        data,
        owner_field="reader_study",
        read_owner=lambda slug: _editable_study(request, user, slug),
        more_fields={"order": _drf_order},
    )


def _check_unique_title(request: web.Request, study_pk: str, title: str, own_pk: str | None) -> None:
    siblings = [other for other in context_of(request).store.display_sets.values() if other.reader_study_pk == study_pk]
    if title_taken(siblings, title, own_pk):
        raise bad_request({"non_field_errors": [NOT_UNIQUE]})


async def create_display_set(request: web.Request) -> web.Response:
    user = require_user(request)
    context = context_of(request)
    data = await read_json(request)
    if data.get("reader_study") is None:
        # ``required=False`` on the field, but the model needs a study: the server cannot save without one.
        raise bad_request({"reader_study": ["This field is required."]})
    attrs, _ = _validate_fields(request, user, {key: value for key, value in data.items() if key != "values"})
    study: ReaderStudy = attrs["reader_study"]
    title = attrs.get("title", "")
    _check_unique_title(request, study.pk, title, None)
    if data.get("values"):
        raise bad_request(["Values can only be added via update"])
    if "order" in attrs:
        request[SERVICE_VARIANT] = "order"
    order = attrs.get("order") or next_display_set_order(context.store, study.pk)
    # The server reads the highest order and checks the title, then inserts in a later round trip; requests handled
    # in between see the same state: concurrent creates get duplicate orders, and a concurrent duplicate title
    # passes the check and fails on the database constraint with Django's HTML 500 (docs/gc-api.md §10).
    await asyncio.sleep(context.config.create_round_trip_seconds)
    if title_taken(
        (other for other in context.store.display_sets.values() if other.reader_study_pk == study.pk), title
    ):
        return web.Response(status=500, text=SERVER_ERROR_HTML, content_type="text/html")
    display_set = DisplaySet(
        pk=new_uuid(),
        reader_study_pk=study.pk,
        title=title,
        order=order,
        created=context.clock.now(),
    )
    context.store.display_sets[display_set.pk] = display_set
    return json_response(display_set_post_json(request, context, display_set), status=201)


async def _update_display_set(request: web.Request, *, partial: bool) -> web.Response:
    user = require_user(request)
    context = context_of(request)
    display_set = _visible_display_set(request)
    if not context.store.reader_studies[display_set.reader_study_pk].can_change(user):
        raise forbidden()
    attrs, values = _validate_fields(request, user, await read_json(request))
    study_pk = attrs["reader_study"].pk if "reader_study" in attrs else display_set.reader_study_pk
    _check_unique_title(request, study_pk, attrs.get("title", display_set.title), display_set.pk)
    if not is_editable(context.store, display_set):
        raise bad_request([LOCKED_BY_ANSWERS])
    display_set.reader_study_pk = study_pk
    if "title" in attrs:
        display_set.title = attrs["title"]
    if "order" in attrs:
        display_set.order = attrs["order"] or next_display_set_order(context.store, study_pk)
    save_values(context, importer.worker_of(request), user, display_set, values, partial=partial)
    return json_response(display_set_post_json(request, context, display_set))


async def partial_update_display_set(request: web.Request) -> web.Response:
    return await _update_display_set(request, partial=True)


async def update_display_set(request: web.Request) -> web.Response:
    return await _update_display_set(request, partial=False)


async def delete_display_set(request: web.Request) -> web.Response:
    raise method_not_allowed("DELETE")


def setup(app: web.Application) -> None:
    importer.install(app)
    router = app.router
    router.add_get("/api/v1/reader-studies/display-sets/", list_display_sets)
    router.add_post("/api/v1/reader-studies/display-sets/", create_display_set)
    detail = f"/api/v1/reader-studies/display-sets/{UUID_PK}/"
    router.add_get(detail, retrieve_display_set)
    router.add_patch(detail, partial_update_display_set)
    router.add_put(detail, update_display_set)
    router.add_delete(detail, delete_display_set)

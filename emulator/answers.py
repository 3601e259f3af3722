"""``reader-studies/answers/`` and ``reader-studies/answers/mine/`` (docs/gc-api.md §4): read-only here.

Editors see every answer of their studies, everyone else only their own; ``mine`` is additionally limited to the
requester's non-ground-truth answers. Filters: ``question__reader_study`` and ``display_set`` (pks; a malformed or
unknown pk is django-filter's 400), ``creator`` (a username), ``is_ground_truth`` (``true``/``false``; other values
are ignored, as django-filter's BooleanWidget does). Ordered by ``created``.

Answers are created by readers in the workstation, which the emulator has not; tests create them through
``admin_answers`` instead.
"""

from __future__ import annotations

from aiohttp import web

from gcbulk.emulator.context import context_of
from gcbulk.emulator.http import current_user, json_response, not_found, paginate
from gcbulk.emulator.reader_studies import UUID_PK, model_choice_filter
from gcbulk.emulator.serializers import answer_json
from gcbulk.emulator.store import Answer
from gcbulk.emulator.visibility import can_view_answer

_BOOLEANS = {"1": True, "true": True, "0": False, "false": False}


def _filtered(request: web.Request, *, mine: bool) -> list[Answer]:
    store = context_of(request).store
    user = current_user(request)
    study_pk = model_choice_filter(request, "question__reader_study", store.reader_studies)
    display_set_pk = model_choice_filter(request, "display_set", store.display_sets)
    creator = request.query.get("creator")
    ground_truth = _BOOLEANS.get(request.query.get("is_ground_truth", "").lower())
    found = []
    for answer in store.answers.values():
        if not can_view_answer(store, user, answer):
            continue
        if mine and (user is None or answer.creator.pk != user.pk or answer.is_ground_truth):
            continue
        if study_pk and store.questions[answer.question_pk].reader_study_pk != study_pk:
            continue
        if display_set_pk and answer.display_set_pk != display_set_pk:
            continue
        if creator and answer.creator.username != creator:
            continue
        if ground_truth is not None and answer.is_ground_truth != ground_truth:
            continue
        found.append(answer)
    found.sort(key=lambda answer: answer.created)
    return found


async def list_answers(request: web.Request) -> web.Response:
    context = context_of(request)
    return paginate(request, _filtered(request, mine=False), lambda a: answer_json(request, context, a))


async def list_my_answers(request: web.Request) -> web.Response:
    context = context_of(request)
    return paginate(request, _filtered(request, mine=True), lambda a: answer_json(request, context, a))


async def retrieve_answer(request: web.Request) -> web.Response:
    context = context_of(request)
    answer = context.store.answers.get(request.match_info["pk"])
    if answer is None or not can_view_answer(context.store, current_user(request), answer):
        raise not_found("Answer")
    return json_response(answer_json(request, context, answer))


def setup(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/v1/reader-studies/answers/", list_answers)
    router.add_get("/api/v1/reader-studies/answers/mine/", list_my_answers)
    router.add_get(f"/api/v1/reader-studies/answers/{UUID_PK}/", retrieve_answer)

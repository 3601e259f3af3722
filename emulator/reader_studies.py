"""Read-only endpoints of the study side (docs/gc-api.md §3): reader studies, their questions, and sockets.

* ``GET reader-studies/?slug=`` and ``GET reader-studies/{pk}/`` (filter: ``slug`` only);
* ``GET reader-studies/questions/?reader_study=<pk>`` and ``GET reader-studies/questions/{pk}/``;
* ``GET components/interfaces/?slug=`` and ``GET components/interfaces/{int pk}/``: every socket, to anyone: an
  anonymous request runs as guardian's anonymous user, which the server counts as authenticated (docs/gc-api.md §10: 200).

Studies and questions are visible to the study's editors and readers; everyone else gets an empty list and 404s.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from gcbulk.emulator.context import context_of
from gcbulk.emulator.http import (
    bad_request,
    current_user,
    json_response,
    not_found,
    paginate,
)
from gcbulk.emulator.serializers import question_json, reader_study_json, socket_json
from gcbulk.emulator.visibility import study_of_question, visible_studies

INVALID_CHOICE = "Select a valid choice. That choice is not one of the available choices."


def model_choice_filter(request: web.Request, name: str, choices: dict[str, object]) -> str | None:
    """django-filter's ModelChoiceFilter on a UUID foreign key: an unknown or malformed pk is a 400, not an empty page.

    ``choices`` holds every object of the model (the filter's queryset is ``objects.all()``, not just visible ones).
    """
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        pk = str(uuid.UUID(raw))
    except ValueError:
        raise bad_request({name: [INVALID_CHOICE]}) from None
    if pk not in choices:
        raise bad_request({name: [INVALID_CHOICE]})
    return pk


async def list_reader_studies(request: web.Request) -> web.Response:
    context = context_of(request)
    studies = list(visible_studies(context.store, current_user(request)))
    slug = request.query.get("slug")
    if slug:
        studies = [study for study in studies if study.slug == slug]
    studies.sort(key=lambda study: study.slug)
    return paginate(request, studies, lambda study: reader_study_json(request, context, study))


async def retrieve_reader_study(request: web.Request) -> web.Response:
    context = context_of(request)
    study = context.store.reader_studies.get(request.match_info["pk"])
    if study is None or not study.can_view(current_user(request)):
        raise not_found("ReaderStudy")
    return json_response(reader_study_json(request, context, study))


async def list_questions(request: web.Request) -> web.Response:
    context = context_of(request)
    store = context.store
    study_pk = model_choice_filter(request, "reader_study", store.reader_studies)
    visible = {study.pk for study in visible_studies(store, current_user(request))}
    questions = [
        store.questions[pk]
        for study_pk_ in sorted(visible)
        if study_pk is None or study_pk_ == study_pk
        for pk in store.reader_studies[study_pk_].question_pks
    ]
    return paginate(request, questions, lambda question: question_json(request, context, question))


async def retrieve_question(request: web.Request) -> web.Response:
    context = context_of(request)
    question = context.store.questions.get(request.match_info["pk"])
    if question is None or not study_of_question(context.store, question).can_view(current_user(request)):
        raise not_found("Question")
    return json_response(question_json(request, context, question))


async def list_interfaces(request: web.Request) -> web.Response:
    sockets = sorted(context_of(request).store.sockets.values(), key=lambda socket: socket.pk)
    slug = request.query.get("slug")
    if slug:
        sockets = [socket for socket in sockets if socket.slug == slug]
    return paginate(request, sockets, socket_json)


async def retrieve_interface(request: web.Request) -> web.Response:
    raw = request.match_info["pk"]
    socket = context_of(request).store.socket_by_pk(int(raw)) if raw.isdigit() else None
    if socket is None:
        raise not_found("ComponentInterface")
    return json_response(socket_json(socket))


# UUID-shaped pks keep "{pk}" from swallowing the literal sub-paths (questions/, display-sets/, answers/).
UUID_PK = "{pk:[0-9a-fA-F-]{36}}"


def setup(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/v1/reader-studies/", list_reader_studies)
    router.add_get(f"/api/v1/reader-studies/{UUID_PK}/", retrieve_reader_study)
    router.add_get("/api/v1/reader-studies/questions/", list_questions)
    router.add_get(f"/api/v1/reader-studies/questions/{UUID_PK}/", retrieve_question)
    router.add_get("/api/v1/components/interfaces/", list_interfaces)
    router.add_get("/api/v1/components/interfaces/{pk}/", retrieve_interface)

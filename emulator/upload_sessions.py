"""``cases/upload-sessions/`` (docs/gc-api.md §2): create, list (own, no filters), retrieve; no update, no DELETE.

``POST`` takes ``uploads`` (hyperlinks to the user's own Completed uploads, at most ``max_uploads_per_session``, unique
filenames) and at most one target: ``display_set`` (+ ``interface``, needs change rights), ``answer`` (a Mask
question's answer of the user, still unset), ``archive`` (a slug the user may upload to; every image becomes a new item,
``interface`` optional) or ``archive_item`` (a pk the user may change, + ``interface``), docs/gc-api.md §12. A session
with a target is scheduled for import at once; one without stays Queued until a display-set value PATCH names it as ``upload_session``. The response shows
the object as created, so its status is "Queued" either way (docs/gc-api.md §2).

Refused with 400 when the user already has ``max_active_imports_per_user`` TIFF imports scheduled or running (the
server counts only TIFF post-processing tasks, and checks only here, docs/gc-api.md §10).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gcbulk.emulator import importer
from gcbulk.emulator.context import context_of
from gcbulk.emulator.http import (
    ApiError,
    bad_request,
    current_user,
    forbidden,
    json_response,
    not_found,
    paginate,
    read_json,
    require_user,
)
from gcbulk.emulator.reader_studies import UUID_PK
from gcbulk.emulator.serializers import upload_session_json
from gcbulk.emulator.store import SESSION_QUEUED, UploadSession, User, new_uuid
from gcbulk.emulator.uploads import completed_upload_for

IMAGE_ANSWER_TYPES = ("Mask",)
TARGETS = ("archive", "archive_item", "answer", "display_set")


def _invalid_pk(value: Any) -> str:
    return f'Invalid pk "{value}" - object does not exist.'


def _field_errors(request: web.Request, user: User, data: dict[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
    context = context_of(request)
    store = context.store
    errors: dict[str, Any] = {}
    uploads = data.get("uploads")
    if uploads is None:
        errors["uploads"] = ["This field is required."]
    elif not isinstance(uploads, list):
        errors["uploads"] = [f'Expected a list of items but got type "{type(uploads).__name__}".']
    else:
        # An empty list is accepted: the server makes a session with no uploads (docs/gc-api.md §10).
        try:
            attrs["uploads"] = [completed_upload_for(context, user, url, "uploads") for url in uploads]
        except ApiError as error:
            errors.update(error.body)
    if data.get("display_set") is not None:
        display_set = store.display_sets.get(str(data["display_set"]))
        if display_set is None or not store.reader_studies[display_set.reader_study_pk].can_change(user):
            errors["display_set"] = [_invalid_pk(data["display_set"])]
        else:
            attrs["display_set"] = display_set
    if data.get("answer") is not None:
        answer = store.answers.get(str(data["answer"]))
        if answer is None or answer.creator.pk != user.pk:
            errors["answer"] = [_invalid_pk(data["answer"])]
        elif store.questions[answer.question_pk].answer_type not in IMAGE_ANSWER_TYPES:
            errors["answer"] = ["This question does not accept image type answers."]
        elif answer.answer is not None:
            errors["answer"] = ["This answer already has an image assignment pending"]
        else:
            attrs["answer"] = answer
    if data.get("interface") is not None:
        if data["interface"] not in store.sockets:
            errors["interface"] = [f"Object with slug={data['interface']} does not exist."]
        else:
            attrs["interface"] = store.sockets[data["interface"]]
    if data.get("archive") is not None:
        # A SlugRelatedField over the archives the user has ``upload_archive`` on (docs/gc-api.md §12).
        archive = store.archive_by_slug(data["archive"]) if isinstance(data["archive"], str) else None
        if archive is None or not archive.can_upload(user):
            errors["archive"] = [f"Object with slug={data['archive']} does not exist."]
        else:
            attrs["archive"] = archive
    if data.get("archive_item") is not None:
        # A PrimaryKeyRelatedField over the items the user has ``change_archiveitem`` on: editors and uploaders.
        item = store.archive_items.get(str(data["archive_item"]))
        if item is None or not store.archives[item.archive_pk].can_upload(user):
            errors["archive_item"] = [_invalid_pk(data["archive_item"])]
        else:
            attrs["archive_item"] = item
    return errors


def _validate(request: web.Request, user: User, attrs: dict[str, Any]) -> str | None:
    """The serializer's ``validate()``, in its order; the first failing rule's message."""
    config = context_of(request).config
    active = importer.active_post_processing_tasks(context_of(request), user.pk)
    if active >= config.max_active_imports_per_user:
        return (
            f"You currently have {active} active image post processing tasks. "
            "Please wait for them to complete before trying again."
        )
    uploads = attrs["uploads"]
    if len(uploads) > config.max_uploads_per_session:
        return (
            f"Too many files uploaded. A maximum of {config.max_uploads_per_session} files may be uploaded per session."
        )
    if len({upload.filename for upload in uploads}) != len(uploads):
        return "Filenames must be unique"
    if sum(name in attrs for name in TARGETS) > 1:
        return "Only one of archive, archive item, answer or reader study can be set"
    if "interface" in attrs and not any(name in attrs for name in ("archive", "archive_item", "display_set")):
        return "An interface can only be defined for archive, archive item or display set uploads."
    if "archive_item" in attrs and "interface" not in attrs:
        return "An interface needs to be defined to upload to an archive item."
    if "display_set" in attrs and "interface" not in attrs:
        return "An interface needs to be defined to upload to a display set."
    return None


async def create_upload_session(request: web.Request) -> web.Response:
    user = require_user(request)
    context = context_of(request)
    attrs: dict[str, Any] = {}
    errors = _field_errors(request, user, await read_json(request), attrs)
    if errors:
        raise bad_request(errors)
    message = _validate(request, user, attrs)
    if message:
        raise bad_request({"non_field_errors": [message]})
    session = UploadSession(
        pk=new_uuid(), creator=user, created=context.clock.now(), upload_pks=[u.pk for u in attrs["uploads"]]
    )
    context.store.upload_sessions[session.pk] = session
    if "display_set" in attrs:
        session.target_display_set_pk = attrs["display_set"].pk
        session.target_socket_slug = attrs["interface"].slug
    if "archive_item" in attrs:
        session.target_archive_item_pk = attrs["archive_item"].pk
        session.target_socket_slug = attrs["interface"].slug
    if "archive" in attrs:
        session.target_archive_pk = attrs["archive"].pk
        session.target_socket_slug = attrs["interface"].slug if "interface" in attrs else None
    if "answer" in attrs:
        answer = attrs["answer"]
        # The answer now points at the session; the import sets its image (docs/gc-api.md §4).
        answer.answer = {"upload_session_pk": session.pk}
        answer.modified = context.clock.now()
        session.target_answer_pk = answer.pk
    if any(name in attrs for name in TARGETS):
        importer.worker_of(request).schedule_session(session)
    return json_response(upload_session_json(request, context, session, status=SESSION_QUEUED), status=201)


def _own_sessions(request: web.Request) -> list[UploadSession]:
    user = current_user(request)
    if user is None:
        return []
    sessions = context_of(request).store.upload_sessions.values()
    # No filters and no ordering (docs/gc-api.md §10): ordered by the random pk, a new session lands anywhere in the list,
    # so paging while sessions are added can skip or repeat rows, as on the server.
    return sorted((s for s in sessions if s.creator.pk == user.pk), key=lambda s: s.pk)


async def list_upload_sessions(request: web.Request) -> web.Response:
    context = context_of(request)
    return paginate(request, _own_sessions(request), lambda s: upload_session_json(request, context, s))


async def delete_upload_session(request: web.Request) -> web.Response:
    """DELETE is refused with 403: the server checks permissions before the method (docs/gc-api.md §10)."""
    require_user(request)
    raise forbidden()


async def retrieve_upload_session(request: web.Request) -> web.Response:
    context = context_of(request)
    session = context.store.upload_sessions.get(request.match_info["pk"])
    user = current_user(request)
    if session is None or user is None or session.creator.pk != user.pk:
        raise not_found("RawImageUploadSession")
    return json_response(upload_session_json(request, context, session))


def setup(app: web.Application) -> None:
    importer.install(app)
    router = app.router
    router.add_get("/api/v1/cases/upload-sessions/", list_upload_sessions)
    router.add_post("/api/v1/cases/upload-sessions/", create_upload_session)
    router.add_get(f"/api/v1/cases/upload-sessions/{UUID_PK}/", retrieve_upload_session)
    router.add_delete(f"/api/v1/cases/upload-sessions/{UUID_PK}/", delete_upload_session)

"""Readers' answers for tests: endpoints under ``/_admin/`` that the real API does **not** have, and Python helpers.

Grand Challenge's answers come from readers working in its browser workstation, which the emulator has not. So tests
create them here, either over HTTP (threaded emulators, subprocesses) or in-process:

``POST /_admin/answers`` with JSON ::

    {"creator": "reader1", "question": "<question pk or API URL>", "display_set": "<pk or API URL, or null>",
     "answer": <JSON; omitted → an example answer of the question's type>, "is_ground_truth": false,
     "score": null, "last_edit_duration": "P0DT00H00M05S",
     "mask_upload": "<API URL of a Completed upload of the creator>"}   # Mask questions: imported, then linked

answers 201 with the answer as ``GET reader-studies/answers/{pk}/`` shows it (after the mask import, if any).
A Mask answer without ``mask_upload`` stays pending (``answer`` null) so a test can drive the real flow:
``POST cases/upload-sessions/ {"uploads": […], "answer": "<answer pk>"}`` as its creator. Errors are
``400 {"detail": "<what is wrong>"}``.

In-process: ``await create_answer(context, creator=…, question_pk=…, display_set_pk=…, mask_file=Path(…))`` and
``await seed_answers(context, "example-study", creators=["reader1"], mask_file=…)``, which answers every answerable
question of every display set with an example answer of its type.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from gcbulk.emulator.admin import admin_error, admin_json, read_admin_json
from gcbulk.emulator.answer_types import (
    NON_ANSWERABLE_TYPES,
    answer_error,
    example_answer,
)
from gcbulk.emulator.context import Context, context_of
from gcbulk.emulator.http import pk_from_url
from gcbulk.emulator.image_builder import InputFile
from gcbulk.emulator.importer import import_session
from gcbulk.emulator.serializers import answer_json, ordered_display_sets
from gcbulk.emulator.store import (
    SESSION_SUCCEEDED,
    UPLOAD_COMPLETED,
    Answer,
    UploadSession,
    new_uuid,
)

UNSET: Any = object()


class AnswerSeedError(ValueError):
    """An answer the emulator will not create; the message says what is wrong."""


async def create_answer(
    context: Context,
    *,
    creator: str,
    question_pk: str,
    display_set_pk: str | None,
    answer: Any = UNSET,
    is_ground_truth: bool = False,
    score: float | None = None,
    last_edit_duration: str | None = None,
    mask_file: Path | None = None,
    mask_upload_pk: str | None = None,
    variant: int = 0,
) -> Answer:
    """Creates one answer as ``creator`` would have; a Mask answer's image is imported from a file or an upload.

    Raises AnswerSeedError for an unknown user, question or display set, a user outside the study, a duplicate
    answer, an answer that does not fit the question's type, or a mask import that fails.
    """
    store = context.store
    user = store.user_by_username(creator)
    question = store.questions.get(question_pk)
    if user is None:
        raise AnswerSeedError(f"no user {creator!r}; use one of the seed's usernames")
    if question is None:
        raise AnswerSeedError(f"no question {question_pk!r}; take a pk from reader-studies/questions/")
    study = store.reader_studies[question.reader_study_pk]
    if not study.can_view(user):
        raise AnswerSeedError(f"{creator} is neither reader nor editor of {study.slug}")
    if is_ground_truth and not study.can_change(user):
        raise AnswerSeedError(f"ground truth is entered by editors; {creator} is not an editor of {study.slug}")
    display_set = store.display_sets.get(display_set_pk) if display_set_pk else None
    if display_set_pk and (display_set is None or display_set.reader_study_pk != study.pk):
        raise AnswerSeedError(f"no display set {display_set_pk!r} in {study.slug}")
    for other in store.answers.values():
        if (other.creator.pk, other.question_pk, other.display_set_pk, other.is_ground_truth) == (
            user.pk,
            question.pk,
            display_set_pk,
            is_ground_truth,
        ):
            raise AnswerSeedError(f"{creator} has already answered this question for this display set")
    if answer is UNSET:
        answer = example_answer(question, variant)
    if (mask_file or mask_upload_pk) and question.answer_type != "Mask":
        raise AnswerSeedError(f"a mask belongs to a Mask question, not to a {question.answer_type} question")
    error = answer_error(question, answer)
    if error:
        raise AnswerSeedError(error)

    now = context.clock.now()
    record = Answer(
        pk=new_uuid(),
        creator=user,
        question_pk=question.pk,
        display_set_pk=display_set_pk,
        answer=answer,
        created=now,
        modified=now,
        is_ground_truth=is_ground_truth,
        score=score,
        last_edit_duration=last_edit_duration,
        total_edit_duration=last_edit_duration,
    )
    store.answers[record.pk] = record
    if mask_file or mask_upload_pk:
        await _import_mask(context, record, mask_file, mask_upload_pk)
    return record


async def _import_mask(context: Context, answer: Answer, mask_file: Path | None, upload_pk: str | None) -> None:
    store = context.store
    upload = store.uploads.get(upload_pk) if upload_pk else None
    if upload_pk and (upload is None or upload.creator.pk != answer.creator.pk or upload.status != UPLOAD_COMPLETED):
        del store.answers[answer.pk]
        raise AnswerSeedError(f"mask_upload must be a Completed upload of {answer.creator.username}")
    session = UploadSession(
        pk=new_uuid(),
        creator=answer.creator,
        created=context.clock.now(),
        upload_pks=[upload.pk] if upload else [],
        target_answer_pk=answer.pk,
    )
    store.upload_sessions[session.pk] = session
    answer.answer = {"upload_session_pk": session.pk}
    inputs = [InputFile(mask_file.name, mask_file)] if mask_file else None
    await import_session(context, session, inputs)
    if session.status != SESSION_SUCCEEDED:
        del store.answers[answer.pk]
        raise AnswerSeedError(f"the mask could not be imported: {session.error_message}")


async def seed_answers(
    context: Context,
    study_slug: str,
    *,
    creators: Iterable[str],
    display_set_pks: Iterable[str] | None = None,
    is_ground_truth: bool = False,
    mask_file: Path | None = None,
) -> list[Answer]:
    """Answers every answerable question of the study's display sets, for each creator, with example answers.

    Mask questions get ``mask_file`` imported as their image (or stay pending without one).
    """
    study = context.store.reader_study_by_slug(study_slug)
    if study is None:
        raise AnswerSeedError(f"no reader study {study_slug!r}")
    wanted = set(display_set_pks) if display_set_pks is not None else None
    created = []
    for variant, display_set in enumerate(ordered_display_sets(context, study.pk)):
        if wanted is not None and display_set.pk not in wanted:
            continue
        for creator in creators:
            for question_pk in study.question_pks:
                question = context.store.questions[question_pk]
                if question.answer_type in NON_ANSWERABLE_TYPES:
                    continue
                created.append(
                    await create_answer(
                        context,
                        creator=creator,
                        question_pk=question_pk,
                        display_set_pk=display_set.pk,
                        is_ground_truth=is_ground_truth,
                        variant=variant,
                        mask_file=mask_file if question.answer_type == "Mask" else None,
                    )
                )
    return created


def _pk(value: Any, collection: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AnswerSeedError(f"{collection} must be a pk or an API URL, not {value!r}")
    return pk_from_url(value, collection) or value


async def post_answer(request: web.Request) -> web.Response:
    context = context_of(request)
    data = await read_admin_json(request)
    try:
        if not isinstance(data.get("creator"), str):
            raise AnswerSeedError('"creator" (a username) is required')
        answer = await create_answer(
            context,
            creator=data["creator"],
            question_pk=_pk(data.get("question"), "reader-studies/questions") or "",
            display_set_pk=_pk(data.get("display_set"), "reader-studies/display-sets"),
            answer=data.get("answer", UNSET),
            is_ground_truth=bool(data.get("is_ground_truth", False)),
            score=data.get("score"),
            last_edit_duration=data.get("last_edit_duration"),
            mask_upload_pk=_pk(data.get("mask_upload"), "uploads"),
        )
    except AnswerSeedError as error:
        raise admin_error(400, str(error)) from None
    return admin_json(answer_json(request, context, answer), status=201)


def setup(app: web.Application) -> None:
    app.router.add_post("/_admin/answers", post_answer)

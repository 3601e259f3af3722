"""The JSON shapes of the study side, in both schema modes (``EmulatorConfig.schema``).

``current`` answers with every field gcapi 0.16.1's response models require (docs/gc-api.md §8): ``algorithms`` on
questions, ``score`` on answers, ``descriptions_map_safe`` on display sets, ``socket`` beside ``interface`` in
display-set values, and no fields deprecated "after 2025.10". ``2025-11`` answers like the server of docs/gc-api.md §9
(Grand Challenge at 9957bfc): no ``descriptions_map_safe``, no ``values[].socket``, no ``algorithms`` or ``score``,
but the deprecated ``title`` / ``help_text`` / ``question_text`` and the DICOM metadata of images are still sent.
A client must therefore not require fields it does not use.

Every URL is absolute on the host the client used (gcapi refuses any other netloc, docs/gc-api.md §5).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import nh3
from aiohttp import web

from gcbulk.emulator.context import SCHEMA_2025_11, Context
from gcbulk.emulator.http import absolute_url, iso, site_url
from gcbulk.emulator.store import (
    Answer,
    DisplaySet,
    Image,
    Question,
    ReaderStudy,
    Socket,
    SocketValue,
    UploadSession,
    ValueSet,
)

DICOM_METADATA_FIELDS = (
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_age",
    "patient_sex",
    "study_date",
    "study_instance_uid",
    "series_instance_uid",
    "study_description",
    "series_description",
)


def is_legacy(context: Context) -> bool:
    return context.config.schema == SCHEMA_2025_11


def _safe(text: str) -> str:
    """The server's ``*_safe`` fields are bleach-cleaned: tags are stripped, not escaped (docs/gc-api.md §10). nh3 is
    bleach's maintained successor; like bleach it escapes a bare ``&`` or ``<`` in the text that is left."""
    return nh3.clean(text, tags=set())


# -- URLs -------------------------------------------------------------------------------------------------------------


def reader_study_url(request: web.Request, study: ReaderStudy) -> str:
    return absolute_url(request, f"reader-studies/{study.pk}/")


def question_url(request: web.Request, question_pk: str) -> str:
    return absolute_url(request, f"reader-studies/questions/{question_pk}/")


def display_set_url(request: web.Request, display_set_pk: str) -> str:
    return absolute_url(request, f"reader-studies/display-sets/{display_set_pk}/")


def answer_url(request: web.Request, answer: Answer) -> str:
    return absolute_url(request, f"reader-studies/answers/{answer.pk}/")


def image_url(request: web.Request, image_pk: str) -> str:
    return absolute_url(request, f"cases/images/{image_pk}/")


def upload_session_url(request: web.Request, session: UploadSession) -> str:
    return absolute_url(request, f"cases/upload-sessions/{session.pk}/")


def media_url(request: web.Request, object_key: str) -> str:
    """Image and socket-value files are served by the API host under ``/media/`` (docs/gc-api.md §4, §9)."""
    return site_url(request, f"media/{object_key}")


# -- sockets, questions, reader studies ------------------------------------------------------------------------------


def socket_json(socket: Socket) -> dict[str, Any]:
    return {
        "title": socket.title,
        "description": socket.description,
        "slug": socket.slug,
        "kind": socket.kind,
        "pk": socket.pk,
        "default_value": socket.default_value,
        "super_kind": socket.super_kind,
        "relative_path": socket.relative_path,
        "overlay_segments": socket.overlay_segments,
        "look_up_table": socket.look_up_table,
    }


def question_json(request: web.Request, context: Context, question: Question) -> dict[str, Any]:
    socket = context.store.sockets.get(question.interface_slug) if question.interface_slug else None
    data: dict[str, Any] = {
        "answer_type": question.answer_type,
        "api_url": question_url(request, question.pk),
        "form_direction": question.direction,
        "help_text_safe": _safe(question.help_text),
        "image_port": question.image_port or "",
        "default_annotation_color": question.default_annotation_color,
        "pk": question.pk,
        "question_text_safe": _safe(question.question_text),
        "reader_study": reader_study_url(request, context.store.reader_studies[question.reader_study_pk]),
        "required": question.required,
        "options": [{"id": o.id, "title": o.title, "default": o.default} for o in question.options],
        "interface": socket_json(socket) if socket else None,
        "overlay_segments": question.overlay_segments,
        "look_up_table": None,
        "widget": question.widget or "",
        "answer_min_value": question.answer_min_value,
        "answer_max_value": question.answer_max_value,
        "answer_step_size": question.answer_step_size,
        "answer_min_length": question.answer_min_length,
        "answer_max_length": question.answer_max_length,
        "answer_match_pattern": question.answer_match_pattern,
        "empty_answer_confirmation": question.empty_answer_confirmation,
        "empty_answer_confirmation_label_safe": _safe(question.empty_answer_confirmation_label),
        "interactive_algorithms": [],
    }
    if is_legacy(context):
        data["help_text"] = data["help_text_safe"]
        data["question_text"] = data["question_text_safe"]
        data["empty_answer_confirmation_label"] = data["empty_answer_confirmation_label_safe"]
    else:
        data["algorithms"] = []
    return data


def has_ground_truth(context: Context, study: ReaderStudy) -> bool:
    questions = set(study.question_pks)
    return any(a.is_ground_truth and a.question_pk in questions for a in context.store.answers.values())


def reader_study_json(request: web.Request, context: Context, study: ReaderStudy) -> dict[str, Any]:
    store = context.store
    data: dict[str, Any] = {
        "api_url": reader_study_url(request, study),
        "url": site_url(request, f"reader-studies/{study.slug}/"),
        "slug": study.slug,
        "logo": site_url(request, f"media/logos/readerstudy/{study.pk}/logo.png"),
        "description": study.description,
        "help_text_safe": _safe(study.help_text),
        "pk": study.pk,
        "questions": [question_json(request, context, store.questions[pk]) for pk in study.question_pks],
        "title_safe": _safe(study.title),
        "is_educational": study.is_educational,
        "instant_verification": study.instant_verification,
        "has_ground_truth": has_ground_truth(context, study),
        "allow_answer_modification": study.allow_answer_modification,
        "enable_autosaving": study.enable_autosaving,
        "allow_case_navigation": study.allow_case_navigation,
        "allow_show_all_annotations": study.allow_show_all_annotations,
        "roll_over_answers_for_n_cases": study.roll_over_answers_for_n_cases,
        "end_of_study_text_safe": _safe(study.end_of_study_text),
    }
    if is_legacy(context):
        data["help_text"] = data["help_text_safe"]
        data["title"] = data["title_safe"]
    return data


# -- display sets ------------------------------------------------------------------------------------------------------


def sorted_values(context: Context, display_set: ValueSet) -> list[SocketValue]:
    """Values in a stable order (the server sorts them by socket kind and title; the order carries no meaning)."""
    sockets = context.store.sockets
    return sorted(display_set.values.values(), key=lambda v: (sockets[v.socket_slug].title, v.socket_slug))


def value_json(request: web.Request, context: Context, value: SocketValue) -> dict[str, Any]:
    """A value in a display-set GET: the full socket as ``interface`` (and as ``socket`` in current mode)."""
    socket = socket_json(context.store.sockets[value.socket_slug])
    data: dict[str, Any] = {}
    if not is_legacy(context):
        data["socket"] = socket
    data.update(
        interface=socket,
        value=value.value,
        file=media_url(request, value.file_key) if value.file_key else None,
        image=image_url(request, value.image_pk) if value.image_pk else None,
        pk=value.pk,
    )
    return data


def value_post_json(request: web.Request, value: SocketValue) -> dict[str, Any]:
    """A value in the POST/PATCH response: the socket as its slug (ComponentInterfaceValuePostSerializer)."""
    return {
        "interface": value.socket_slug,
        "value": value.value,
        "file": media_url(request, value.file_key) if value.file_key else None,
        "image": image_url(request, value.image_pk) if value.image_pk else None,
        "pk": value.pk,
        "image_name": None,
    }


def ordered_display_sets(context: Context, study_pk: str) -> list[DisplaySet]:
    """The study's display sets by ``order, created`` (the model's Meta.ordering)."""
    found = [ds for ds in context.store.display_sets.values() if ds.reader_study_pk == study_pk]
    return sorted(found, key=lambda ds: (ds.order, ds.created))


def display_set_indexes(display_sets: Iterable[DisplaySet]) -> dict[str, int]:
    """``index`` is the position in the study's ordered list (``standard_index``; studies here are not shuffled)."""
    return {ds.pk: position for position, ds in enumerate(display_sets)}


def display_set_index(context: Context, ds: DisplaySet) -> int:
    """The position of one display set in its study's order, counted rather than sorted (one pass per response)."""
    key = (ds.order, ds.created)
    return sum(
        1
        for other in context.store.display_sets.values()
        if other.reader_study_pk == ds.reader_study_pk and (other.order, other.created) < key
    )


def _display_set_common(request: web.Request, context: Context, ds: DisplaySet, index: int | None) -> dict[str, Any]:
    study = context.store.reader_studies[ds.reader_study_pk]
    if index is None:
        index = display_set_index(context, ds)
    return {
        "pk": ds.pk,
        "title": ds.title,
        "title_safe": _safe(ds.title),
        "order": ds.order,
        "api_url": display_set_url(request, ds.pk),
        "hanging_protocol": None,
        "optional_hanging_protocols": [],
        "view_content": study.view_content,
        "description": "",
        "index": index,
    }


def display_set_json(
    request: web.Request, context: Context, ds: DisplaySet, index: int | None = None
) -> dict[str, Any]:
    """The DisplaySetSerializer shape of ``GET reader-studies/display-sets/``."""
    data = _display_set_common(request, context, ds, index)
    data["reader_study"] = reader_study_url(request, context.store.reader_studies[ds.reader_study_pk])
    data["values"] = [value_json(request, context, value) for value in sorted_values(context, ds)]
    if is_legacy(context):
        return data
    del data["title"]  # deprecated for reads; gcapi 0.16.1's DisplaySet model has only title_safe
    data["descriptions_map_safe"] = {}
    return data


def display_set_post_json(request: web.Request, context: Context, ds: DisplaySet) -> dict[str, Any]:
    """The DisplaySetPostSerializer shape of the POST/PATCH/PUT responses: ``reader_study`` is the slug."""
    data = _display_set_common(request, context, ds, None)
    data["reader_study"] = context.store.reader_studies[ds.reader_study_pk].slug
    data["values"] = [value_post_json(request, value) for value in sorted_values(context, ds)]
    if not is_legacy(context):
        data["descriptions_map_safe"] = {}
    return data


# -- answers, images, upload sessions -------------------------------------------------------------------------------


def answer_json(request: web.Request, context: Context, answer: Answer) -> dict[str, Any]:
    data: dict[str, Any] = {
        "answer": answer.answer,
        "api_url": answer_url(request, answer),
        "created": iso(answer.created),
        "creator": answer.creator.username,
        "display_set": display_set_url(request, answer.display_set_pk) if answer.display_set_pk else None,
        "pk": answer.pk,
        "question": question_url(request, answer.question_pk),
        "modified": iso(answer.modified),
        "answer_image": image_url(request, answer.answer_image_pk) if answer.answer_image_pk else None,
        "last_edit_duration": answer.last_edit_duration,
        "total_edit_duration": answer.total_edit_duration,
        "is_ground_truth": answer.is_ground_truth,
    }
    if not is_legacy(context):
        data["score"] = answer.score
    return data


def image_json(request: web.Request, context: Context, image: Image) -> dict[str, Any]:
    data: dict[str, Any] = {
        "pk": image.pk,
        "name": image.name,
        "files": [
            {
                "pk": f.pk,
                "image": image.pk,
                "file": media_url(request, f.object_key),
                "image_type": f.image_type,
            }
            for f in image.files
        ],
        # gcapi 0.16.1's DICOMImageSet model; getattr: a state pickled before the field existed lacks it.
        "dicom_image_set": (
            {"image_set_id": image.dicom_image_set_id} if getattr(image, "dicom_image_set_id", None) else None
        ),
        "width": image.width,
        "height": image.height,
        "depth": image.depth,
        "color_space": image.color_space,
        "modality": {"modality": image.modality} if image.modality else None,
        "eye_choice": image.eye_choice,
        "stereoscopic_choice": image.stereoscopic_choice,
        "field_of_view": image.field_of_view,
        "shape_without_color": image.shape_without_color,
        "shape": image.shape,
        "voxel_width_mm": image.voxel_width_mm,
        "voxel_height_mm": image.voxel_height_mm,
        "voxel_depth_mm": image.voxel_depth_mm,
        "api_url": image_url(request, image.pk),
        "window_center": image.window_center,
        "window_width": image.window_width,
        "segments": image.segments,
    }
    if is_legacy(context):
        data.update({name: "" for name in DICOM_METADATA_FIELDS})
        data["patient_birth_date"] = data["study_date"] = None
    return data


def upload_session_json(
    request: web.Request, context: Context, session: UploadSession, *, status: str | None = None
) -> dict[str, Any]:
    """``status`` overrides the shown status: the POST response shows the object as created (docs/gc-api.md §2)."""
    # Consumed uploads are deleted rows, so they drop out of the session's upload lists, as on the server.
    uploads = [context.store.uploads[pk] for pk in session.upload_pks if pk in context.store.uploads]
    return {
        "pk": session.pk,
        "creator": session.creator.pk,
        "status": status or session.status,
        "error_message": session.error_message,
        "image_set": [image_url(request, pk) for pk in session.image_pks if pk in context.store.images],
        "api_url": upload_session_url(request, session),
        "user_uploads": [upload.pk for upload in uploads],
        "uploads": [absolute_url(request, f"uploads/{upload.pk}/") for upload in uploads],
    }

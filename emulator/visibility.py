"""Who may see what on the study side: guardian's object permissions as Grand Challenge assigns them (docs/gc-api.md §0).

* reader studies, questions and display sets: the study's editors and readers view them, only editors change them;
* answers: their creator views them, and so do the study's editors (readers see only their own);
* images: their creator, unless the image's upload session failed (a segmentation refused at linking: the session's
  ``image_set`` names the image, but ``cases/images/?origin=`` does not show it, docs/gc-api.md §10); the members of a study that shows the image in a display set; the editors of a study
  whose answer holds it as ``answer_image``; the members of an archive that shows the image in an item (§12).

Anonymous users (``None``) see nothing: every list comes back empty and every detail 404s.
"""

from __future__ import annotations

from collections.abc import Iterator

from gcbulk.emulator.store import (
    SESSION_FAILED,
    Answer,
    DisplaySet,
    Image,
    Question,
    ReaderStudy,
    Store,
    User,
    ValueSet,
)


def visible_studies(store: Store, user: User | None) -> Iterator[ReaderStudy]:
    return (study for study in store.reader_studies.values() if study.can_view(user))


def study_of_question(store: Store, question: Question) -> ReaderStudy:
    return store.reader_studies[question.reader_study_pk]


def study_of_answer(store: Store, answer: Answer) -> ReaderStudy:
    return study_of_question(store, store.questions[answer.question_pk])


def can_view_display_set(store: Store, user: User | None, display_set: DisplaySet) -> bool:
    return store.reader_studies[display_set.reader_study_pk].can_view(user)


def can_view_value_set(store: Store, user: User | None, value_set: ValueSet) -> bool:
    """A display set's study members, or an archive item's archive members (docs/gc-api.md §12)."""
    if isinstance(value_set, DisplaySet):
        return can_view_display_set(store, user, value_set)
    return store.archives[value_set.archive_pk].can_view(user)


def can_view_answer(store: Store, user: User | None, answer: Answer) -> bool:
    if user is None:
        return False
    return answer.creator.pk == user.pk or study_of_answer(store, answer).can_change(user)


def can_view_image(store: Store, user: User | None, image: Image) -> bool:
    if user is None:
        return False
    if image.creator.pk == user.pk:
        origin = store.upload_sessions.get(image.origin_session_pk or "")
        return origin is None or origin.status != SESSION_FAILED
    if any(store.reader_studies[pk].can_view(user) for pk in image.reader_study_pks if pk in store.reader_studies):
        return True
    if any(store.archives[pk].can_view(user) for pk in getattr(image, "archive_pks", ()) if pk in store.archives):
        return True
    return any(store.reader_studies[pk].can_change(user) for pk in image.answer_study_pks if pk in store.reader_studies)


def refresh_image_studies(store: Store, image_pk: str | None) -> None:
    """Recomputes which studies and archives show an image, after a value pointing at it changed.

    The server updates the image's viewer groups the same way whenever a socket value is added or removed.
    """
    image = store.images.get(image_pk) if image_pk else None
    if image is None:
        return
    image.reader_study_pks = {
        display_set.reader_study_pk
        for display_set in store.display_sets.values()
        if any(value.image_pk == image.pk for value in display_set.values.values())
    }
    image.archive_pks = {
        item.archive_pk
        for item in store.archive_items.values()
        if any(value.image_pk == image.pk for value in item.values.values())
    }

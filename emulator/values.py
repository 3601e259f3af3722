"""Value-set state rules shared by the request handlers and the import worker (docs/gc-api.md §3, §12).

* A display set is editable only while no answer refers to it (``DisplaySet.is_editable``); an archive item always is.
* ``order`` 0 means "the next multiple of 10 above the study's highest" (the server's pre-save signal).
* Setting or removing an image value updates who may view the image, as the server's viewer-group sync does.
"""

from __future__ import annotations

import re

from gcbulk.emulator.store import ArchiveItem, DisplaySet, SocketValue, Store, ValueSet
from gcbulk.emulator.visibility import refresh_image_studies

LOCKED_BY_ANSWERS = "This display set cannot be changed, as answers for it already exist."


def is_editable(store: Store, display_set: ValueSet) -> bool:
    if isinstance(display_set, ArchiveItem):
        return True  # ArchiveItem.is_editable (docs/gc-api.md §12)
    return not any(answer.display_set_pk == display_set.pk for answer in store.answers.values())


def next_display_set_order(store: Store, reader_study_pk: str) -> int:
    """``(highest + 10) // 10 * 10`` over the study's display sets: 10, 20, 30… when the server picks the orders."""
    highest = max((ds.order for ds in store.display_sets.values() if ds.reader_study_pk == reader_study_pk), default=0)
    return (highest + 10) // 10 * 10


def put_value(store: Store, display_set: ValueSet, value: SocketValue) -> None:
    """Sets the display set's or archive item's value for ``value.socket_slug``, replacing any previous one."""
    previous = display_set.values.get(value.socket_slug)
    display_set.values[value.socket_slug] = value
    if value.image_pk and value.image_pk in store.images:
        image = store.images[value.image_pk]
        if isinstance(display_set, DisplaySet):
            image.reader_study_pks.add(display_set.reader_study_pk)
        else:
            image.archive_pks.add(display_set.archive_pk)
    if previous is not None and previous.image_pk and previous.image_pk != value.image_pk:
        refresh_image_studies(store, previous.image_pk)


def remove_value(store: Store, display_set: ValueSet, socket_slug: str) -> None:
    previous = display_set.values.pop(socket_slug, None)
    if previous is not None and previous.image_pk:
        refresh_image_studies(store, previous.image_pk)


def file_value_key(value_pk: int, filename: str) -> str:
    """Where a file value's object lives, as the server's ``component_interface_value_path`` names it."""
    padded = f"{value_pk:04x}"
    return f"components/componentinterfacevalue/{padded[-4:-2]}/{padded[-2:]}/{value_pk}/{valid_filename(filename)}"


def valid_filename(name: str) -> str:
    """Django's ``get_valid_filename``, which the server's storage applies (docs/gc-api.md §10): spaces become ``_``, any
    character other than letters, digits, ``-``, ``_`` and ``.`` is dropped. Hand-written: the emulator has no Django."""
    cleaned = re.sub(r"(?u)[^-\w.]", "", name.strip().replace(" ", "_"))
    return cleaned if cleaned not in ("", ".", "..") else "file"

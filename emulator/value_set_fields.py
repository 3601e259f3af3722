"""What a display set and an archive item share, served by one code path because the server's is one: the display
sets' post serializer and ``ArchiveItemPostSerializer`` both use ``CIVSetPostSerializerMixin``, ``title`` is the same
CharField and both models hold a per-owner unique title (docs/gc-api.md §12). This module validates the body's fields,
checks a title against its siblings and saves the values (PATCH and PUT). What differs is only the owner field (a
study's slug, an archive's hyperlink) and a display set's ``order``; each endpoint passes those in."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from gcbulk.emulator.context import Context
from gcbulk.emulator.http import ApiError, bad_request
from gcbulk.emulator.importer import ImportWorker
from gcbulk.emulator.store import User, ValueSet
from gcbulk.emulator.value_requests import ValueRequest, apply_values, validate_values
from gcbulk.emulator.values import remove_value

MAX_TITLE_LENGTH = 255

# Reads a raw field: the validated value, or ``ValueError`` carrying DRF's message for that field.
FieldReader = Callable[[Any], object]


def title_errors(title: str) -> list[str]:
    """Why the server refuses a (whitespace-stripped) title: DRF's CharField runs its max-length, null-character and
    surrogate validators, in that order, and reports every failure. PostgreSQL text cannot hold a NUL, so no title on
    the server ever contains one."""
    errors = []
    if len(title) > MAX_TITLE_LENGTH:
        errors.append(f"Ensure this field has no more than {MAX_TITLE_LENGTH} characters.")
    if "\x00" in title:
        errors.append("Null characters are not allowed.")
    surrogate = next((c for c in title if 0xD800 <= ord(c) <= 0xDFFF), None)
    if surrogate is not None:
        errors.append(f"Surrogate characters are not allowed: U+{ord(surrogate):X}.")
    return errors


def validate_value_set_fields(
    context: Context,
    user: User,
    data: dict[str, Any],
    *,
    owner_field: str,
    read_owner: FieldReader,
    more_fields: Mapping[str, FieldReader] = MappingProxyType({}),
) -> tuple[dict[str, Any], list[ValueRequest]]:
    """DRF field validation of a display-set or archive-item body: every field's errors at once, as one 400, in the
    serializer's field order (owner, title, ``more_fields``, values). Returns the validated fields by name and the
    values to apply; an absent or null owner is left to the caller (create needs one, an update does not)."""
    attrs: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    if data.get(owner_field) is not None:
        try:
            attrs[owner_field] = read_owner(data[owner_field])
        except ValueError as error:
            errors[owner_field] = [str(error)]
    if "title" in data:
        title = data["title"]
        if title is None:
            errors["title"] = ["This field may not be null."]
        elif isinstance(title, (dict, list, bool)):
            errors["title"] = ["Not a valid string."]
        elif title_errors(str(title).strip()):
            errors["title"] = title_errors(str(title).strip())
        else:
            attrs["title"] = str(title).strip()
    for name, read in more_fields.items():
        if name in data:
            try:
                attrs[name] = read(data[name])
            except ValueError as error:
                errors[name] = [str(error)]
    values: list[ValueRequest] = []
    if "values" in data and data["values"] is None:
        errors["values"] = ["This field may not be null."]  # docs/gc-api.md §10
    elif data.get("values") is not None:
        try:
            values = validate_values(context, user, data["values"])
        except ApiError as error:
            errors.update(error.body)
    if errors:
        raise bad_request(errors)
    return attrs, values


def title_taken(siblings: Iterable[ValueSet], title: str, own_pk: str | None = None) -> bool:
    """Whether another display set of the study, or item of the archive, holds ``title``: non-empty titles are unique
    per owner (a conditional UniqueConstraint on both models), any number may be untitled."""
    return bool(title) and any(other.title == title and other.pk != own_pk for other in siblings)


def save_values(
    context: Context,
    worker: ImportWorker,
    user: User,
    value_set: ValueSet,
    values: list[ValueRequest],
    *,
    partial: bool,
) -> None:
    """The mixin's update of ``values``: PATCH sets the sockets it lists, PUT also removes the ones it does not."""
    apply_values(context, worker, user, value_set, values)
    if not partial:
        listed = {value.socket.slug for value in values}
        for slug in [slug for slug in value_set.values if slug not in listed]:
            remove_value(context.store, value_set, slug)

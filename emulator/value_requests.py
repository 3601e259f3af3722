"""The ``values`` of a display-set or archive-item PATCH/PUT (one code path for both, as the server's
``CIVSetPostSerializerMixin``, docs/gc-api.md §12): validated like ComponentInterfaceValuePostSerializer, then applied.

Validation reproduces DRF's two stages per value (docs/gc-api.md §3, §9): field errors first (unknown socket, bad
hyperlinks), and only for a value without field errors the serializer's ``validate()`` (exactly one source, the
source the socket's super kind needs, the JSON schema of a value). Errors come back as
``{"values": [{}, {"interface": ["Object with slug=nope does not exist."]}]}``, one entry per value.

Applying: a JSON value or an existing image is set at once; ``user_uploads`` become a new upload session and
``upload_session`` is scheduled for import; a ``user_upload`` on a file socket is copied in the background. So image
and file values appear only after the worker is done (docs/gc-api.md §9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gcbulk.emulator.context import Context
from gcbulk.emulator.dicom_sets import import_dicom_image_set
from gcbulk.emulator.http import bad_request, pk_from_url
from gcbulk.emulator.importer import ImportWorker
from gcbulk.emulator.socket_kinds import kind_code, schema_error
from gcbulk.emulator.store import (
    SESSION_QUEUED,
    ArchiveItem,
    Socket,
    SocketValue,
    Store,
    Upload,
    UploadSession,
    User,
    ValueSet,
    new_uuid,
)
from gcbulk.emulator.values import put_value
from gcbulk.emulator.visibility import can_view_image

SOURCES = "['image', 'value', 'file', 'user_upload', 'upload_session', ('image_name', 'user_uploads')]"
INVALID_HYPERLINK = "Invalid hyperlink - Object does not exist."
DICOM_IMAGE_SET = "DICOM Image Set"
FIELDS = ("interface", "value", "file", "image", "upload_session", "user_upload", "user_uploads", "image_name")


@dataclass
class ValueRequest:
    """One validated value: its socket and the single source to take it from."""

    socket: Socket
    source: str  # value | image | upload_session | user_uploads | user_upload | dicom_image_set
    payload: Any


class _Resolver:
    """Turns hyperlinks into the user's objects, with DRF's error messages."""

    def __init__(self, context: Context, user: User) -> None:
        self.context = context
        self.user = user

    def _pk(self, url: Any, collection: str) -> str:
        if not isinstance(url, str):
            raise ValueError(f"Incorrect type. Expected URL string, received {type(url).__name__}.")
        pk = pk_from_url(url, collection)
        if pk is None:
            raise ValueError("Invalid hyperlink - No URL match.")
        return pk

    def upload(self, url: Any) -> Upload:
        upload = self.context.store.uploads.get(self._pk(url, "uploads"))
        if upload is None or upload.creator.pk != self.user.pk:
            raise ValueError(INVALID_HYPERLINK)
        return upload

    def upload_session(self, url: Any) -> UploadSession:
        session = self.context.store.upload_sessions.get(self._pk(url, "cases/upload-sessions"))
        # Only the user's own sessions still Queued (never processed) are in the field's queryset.
        if session is None or session.creator.pk != self.user.pk or session.status != SESSION_QUEUED:
            raise ValueError(INVALID_HYPERLINK)
        return session

    def image(self, url: Any) -> str:
        image = self.context.store.images.get(self._pk(url, "cases/images"))
        if image is None or not can_view_image(self.context.store, self.user, image):
            raise ValueError(INVALID_HYPERLINK)
        return image.pk


def _field_errors(item: dict[str, Any], resolver: _Resolver, attrs: dict[str, Any]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    sockets = resolver.context.store.sockets
    if "interface" not in item:
        errors["interface"] = ["This field is required."]
    elif item["interface"] is None:
        errors["interface"] = ["This field may not be null."]
    elif not isinstance(item["interface"], str) or item["interface"] not in sockets:
        errors["interface"] = [f"Object with slug={item['interface']} does not exist."]
    else:
        attrs["interface"] = sockets[item["interface"]]
    for name, resolve in (
        ("image", resolver.image),
        ("upload_session", resolver.upload_session),
        ("user_upload", resolver.upload),
    ):
        if item.get(name) is not None:
            try:
                attrs[name] = resolve(item[name])
            except ValueError as error:
                errors[name] = [str(error)]
    uploads = item.get("user_uploads")
    if uploads is not None:
        if not isinstance(uploads, list):
            errors["user_uploads"] = [f'Expected a list of items but got type "{type(uploads).__name__}".']
        else:
            try:
                attrs["user_uploads"] = [resolver.upload(url) for url in uploads]
            except ValueError as error:
                errors["user_uploads"] = [str(error)]
    if item.get("file") is not None:
        errors["file"] = ["The submitted data was not a file. Check the encoding type on the form."]
    if item.get("image_name") is not None and not isinstance(item["image_name"], str):
        errors["image_name"] = ["Not a valid string."]
    return errors


def _validate(item: dict[str, Any], attrs: dict[str, Any]) -> dict[str, list[str]]:
    """The serializer's ``validate()``; ``attrs`` holds the resolved fields (None where the client sent null)."""
    socket: Socket = attrs["interface"]
    provided = {name for name in item if name in FIELDS and name != "interface"}
    if not provided:
        return {"non_field_errors": [f"You must provide at least one of {SOURCES}."]}
    not_none = {name for name in provided if item[name] is not None}
    if len(not_none) > 1 and not_none != {"image_name", "user_uploads"}:
        return {"non_field_errors": [f"You can only provide one of {SOURCES} for each socket."]}
    code = kind_code(socket)
    if socket.kind == DICOM_IMAGE_SET and not attrs.get("image"):
        # A DICOM image set is built from uploads and needs the image's name as well (docs/gc-api.md §3, §10). The exact
        # wording of this message is not in docs/gc-api.md; it follows the server's other "required for" messages.
        if not (attrs.get("user_uploads") and item.get("image_name")):
            return {"non_field_errors": [f"user_uploads and image_name are required for interface kind {code}"]}
    elif socket.super_kind == "Image":
        if not any(attrs.get(name) for name in ("image", "user_uploads", "upload_session")):
            return {
                "non_field_errors": [f"upload_session, user_uploads or image are required for interface kind {code}"]
            }
    elif socket.super_kind == "Value":
        if item.get("value") is None:
            return {"non_field_errors": [f"value is required for interface kind {code}"]}
        message = schema_error(socket, item["value"])
        if message:
            # full_clean() raises a Django ValidationError, which DRF files under "__all__".
            return {"__all__": [message]}
    elif not attrs.get("user_upload"):
        return {"non_field_errors": [f"user_upload or file is required for interface kind {code}"]}
    return {}


def validate_values(context: Context, user: User, raw: Any) -> list[ValueRequest]:
    """Validates a ``values`` list; raises the 400 DRF gives, naming each failing entry."""
    if not isinstance(raw, list):
        raise bad_request(
            {"values": {"non_field_errors": [f'Expected a list of items but got type "{type(raw).__name__}".']}}
        )
    resolver = _Resolver(context, user)
    requests: list[ValueRequest] = []
    errors: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict):
            errors.append(
                {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(item).__name__}."]}
            )
            continue
        attrs: dict[str, Any] = {}
        entry_errors = _field_errors(item, resolver, attrs) or _validate(item, attrs)
        errors.append(entry_errors)
        if not entry_errors:
            source = next(
                name
                for name in ("value", "image", "upload_session", "user_uploads", "user_upload")
                if item.get(name) is not None
            )
            payload = item["value"] if source == "value" else attrs[source]
            if source == "user_uploads" and attrs["interface"].kind == DICOM_IMAGE_SET:
                source, payload = "dicom_image_set", (attrs[source], item["image_name"])
            requests.append(ValueRequest(socket=attrs["interface"], source=source, payload=payload))
    if any(errors):
        raise bad_request({"values": errors})
    return requests


def _shared_value(store: Store, slug: str, *, value: Any = None, image_pk: str | None = None) -> SocketValue:
    """The server reuses an existing socket value with the same socket and content: the same image or JSON value in
    two display sets (or archive items) is one value pk (docs/gc-api.md §10)."""
    for display_set in store.value_sets():
        existing = display_set.values.get(slug)
        if (
            existing is not None
            and existing.file_key is None
            and existing.image_pk == image_pk
            and (image_pk is not None or existing.value == value)
        ):
            return existing
    return SocketValue(pk=store.next_int_pk(), socket_slug=slug, value=value, image_pk=image_pk)


def apply_values(
    context: Context, worker: ImportWorker, user: User, display_set: ValueSet, requests: list[ValueRequest]
) -> None:
    """Sets what can be set now and schedules the rest (``_update_civ`` on the server)."""
    store = context.store
    for request in requests:
        slug = request.socket.slug
        current = display_set.values.get(slug)
        if request.source == "value":
            if current is None or current.value != request.payload or current.image_pk or current.file_key:
                put_value(store, display_set, _shared_value(store, slug, value=request.payload))
        elif request.source == "image":
            if current is None or current.image_pk != request.payload:
                put_value(store, display_set, _shared_value(store, slug, image_pk=request.payload))
        elif request.source in ("upload_session", "user_uploads"):
            if request.source == "upload_session":
                session = request.payload
            else:
                session = UploadSession(
                    pk=new_uuid(),
                    creator=user,
                    created=context.clock.now(),
                    upload_pks=[upload.pk for upload in request.payload],
                )
                store.upload_sessions[session.pk] = session
            if isinstance(display_set, ArchiveItem):
                session.target_archive_item_pk = display_set.pk
            else:
                session.target_display_set_pk = display_set.pk
            session.target_socket_slug = slug
            worker.schedule_session(session)
        elif request.source == "dicom_image_set":
            uploads, image_name = request.payload
            worker.schedule(
                import_dicom_image_set(context, user, display_set.pk, slug, [u.pk for u in uploads], image_name)
            )
        else:
            worker.schedule_file_copy(display_set.pk, slug, request.payload.pk)

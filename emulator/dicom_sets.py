"""DICOM Image Set values (docs/gc-api.md §3, §10): ``user_uploads`` plus ``image_name``, imported without an upload session.

As the server does it: the files must be DICOM; seven tags must be equal in every file (``EQUAL_TAGS``); the set is
de-identified again with Grand Challenge's own de-identifier (``config.dicom_server_deidentify``), which rejects SOP
classes its procedure does not keep; the de-identified instances are stored and the image names them
(``dicom_image_set``). No upload session exists for it, failures are kept where no API shows them (here: the log), and
the uploads are deleted whether the import worked or not.

``GET cases/images/{pk}/dicom/instances/`` answers as the server's image store does for gcapi 0.16.1
(``client.images.download``): ``{"instances": [{"sop_instance_uid", "get_instance": {method, url, headers}}]}``, each
``get_instance`` a signed URL on the S3 host.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from aiohttp import web

from gcbulk.emulator.context import Context, context_of
from gcbulk.emulator.http import json_response
from gcbulk.emulator.image_builder import InputFile, build_images, is_dicom
from gcbulk.emulator.images import _viewable_image
from gcbulk.emulator.importer import store_image
from gcbulk.emulator.objects import IMAGES_BUCKET
from gcbulk.emulator.reader_studies import UUID_PK
from gcbulk.emulator.s3 import presigned_get_url
from gcbulk.emulator.store import UPLOAD_COMPLETED, SocketValue, UploadSession, User, new_uuid
from gcbulk.emulator.uploads import delete_upload, upload_object_path
from gcbulk.emulator.values import is_editable, put_value

logger = logging.getLogger(__name__)


class ImageSetRefused(Exception):
    """Why the server refuses a DICOM image set; only ever logged (docs/gc-api.md §10)."""


# The tags the server asserts equal in every file of a set (``cases/models.py``: its de-identifier's
# ``assert_unique_value_for``, docs/gc-api.md §11).
EQUAL_TAGS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "StudyID",
    "StudyDate",
    "AccessionNumber",
    "SeriesNumber",
)


def _one_of_each(paths: list[Path]) -> None:
    """The server's assertion: one value of each of ``EQUAL_TAGS`` in the set. As its de-identifier does, only the
    elements a file has are compared (a file without AccessionNumber does not differ from one with it)."""
    import pydicom

    values: dict[str, set[str]] = {name: set() for name in EQUAL_TAGS}
    for path in paths:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(values))
        for name, seen in values.items():
            if name in header:
                seen.add(str(header[name].value))
    for name, seen in values.items():
        if len(seen) > 1:
            raise ImageSetRefused(f"Element {name!r} has differing values across files: these must be identical.")


def _deidentify(inputs: list[InputFile], work_dir: Path, enabled: bool) -> list[InputFile]:
    """The set as the server keeps it: de-identified by one de-identifier (one UID map), or as received."""
    if not enabled:
        return inputs
    from grand_challenge_dicom_de_identifier.deidentifier import DicomDeidentifier
    from grand_challenge_dicom_de_identifier.exceptions import RejectedDICOMFileError

    deidentifier = DicomDeidentifier()
    target = work_dir / "deidentified"
    target.mkdir(parents=True, exist_ok=True)
    output = []
    for index, source in enumerate(inputs):
        path = target / f"{index}.dcm"
        try:
            with open(path, "wb") as handle:
                deidentifier.deidentify_file(file=str(source.path), output=handle)
        except RejectedDICOMFileError as exc:
            raise ImageSetRefused(f"{source.name}: rejected by the de-identifier: {exc.justification}") from None
        output.append(InputFile(source.name, path))
    return output


def _import(context: Context, inputs: list[InputFile], work_dir: Path) -> tuple[object, list[tuple[str, Path]]]:
    """Checks, de-identifies and builds the set (in a thread): (the built image, [(SOP instance UID, file)])."""
    import pydicom

    if not all(is_dicom(i.path) for i in inputs):
        raise ImageSetRefused("not every file is DICOM")
    _one_of_each([i.path for i in inputs])
    kept = _deidentify(inputs, work_dir, context.config.dicom_server_deidentify)
    result = build_images(kept, work_dir / "built")
    if len(result.images) != 1 or result.file_errors:
        raise ImageSetRefused(f"the files are not one DICOM series ({result.file_errors or len(result.images)})")
    instances = [(str(pydicom.dcmread(i.path, stop_before_pixels=True).SOPInstanceUID), i.path) for i in kept]
    return result.images[0], instances


def _store_instances(context: Context, image_pk: str, instances: list[tuple[str, Path]]) -> list[tuple[str, str]]:
    stored = []
    for uid, path in instances:
        key = f"images/{image_pk[0:2]}/{image_pk[2:4]}/{image_pk}/dicom/{uid}.dcm"
        destination = context.objects.object_path(IMAGES_BUCKET, key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        stored.append((uid, key))
    return stored


async def import_dicom_image_set(
    context: Context, user: User, display_set_pk: str, socket_slug: str, upload_pks: list[str], image_name: str
) -> None:
    store = context.store
    uploads = [store.uploads.get(pk) for pk in upload_pks]
    # Never listed: the server makes no RawImageUploadSession for a DICOM image set (docs/gc-api.md §10).
    hidden = UploadSession(pk=new_uuid(), creator=user, created=context.clock.now(), upload_pks=upload_pks)
    work_dir = context.config.data_dir / "imports" / hidden.pk
    try:
        if any(upload is None or upload.status != UPLOAD_COMPLETED for upload in uploads):
            raise ImageSetRefused("an upload is gone or unfinished")
        inputs = [InputFile(u.filename, upload_object_path(context, u)) for u in uploads if u is not None]
        built, instances = await asyncio.to_thread(_import, context, inputs, work_dir)
        display_set = store.value_set(display_set_pk)
        if display_set is None or not is_editable(store, display_set):
            return
        image = store_image(context, hidden, built)  # type: ignore[arg-type]
        image.name = image_name
        image.origin_session_pk = None
        image.dicom_image_set_id = new_uuid()
        image.dicom_instances = await asyncio.to_thread(_store_instances, context, image.pk, instances)
        put_value(store, display_set, SocketValue(pk=store.next_int_pk(), socket_slug=socket_slug, image_pk=image.pk))
    except ImageSetRefused as refused:
        logger.info("DICOM image set for %s/%s failed: %s", display_set_pk, socket_slug, refused)
    except Exception as error:  # noqa: BLE001 - pydicom raises many kinds on a damaged file; each refuses the set
        logger.info(
            "DICOM image set for %s/%s failed: %s: %s", display_set_pk, socket_slug, type(error).__name__, error
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        # Deleted even when the import failed (docs/gc-api.md §10).
        for upload in uploads:
            if upload is not None and upload.pk in store.uploads:
                delete_upload(context, upload)


async def list_instances(request: web.Request) -> web.Response:
    """``GET cases/images/{pk}/dicom/instances/``: 404 for an image that is no DICOM image set (or not viewable)."""
    context = context_of(request)
    image = _viewable_image(request, request.match_info["pk"])
    if not getattr(image, "dicom_image_set_id", None):
        return json_response({"detail": "No DICOM image set."}, status=404)
    expiry = context.config.download_url_expiry_seconds
    return json_response(
        {
            "instances": [
                {
                    "sop_instance_uid": uid,
                    "get_instance": {
                        "method": "GET",
                        "url": presigned_get_url(context, IMAGES_BUCKET, key, expiry),
                        "headers": {},
                    },
                }
                for uid, key in image.dicom_instances
            ]
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_get(f"/api/v1/cases/images/{UUID_PK}/dicom/instances/", list_instances)

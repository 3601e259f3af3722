"""DICOM Image Set values (contract §3, §10): ``user_uploads`` plus ``image_name``, imported without an upload session.

The server de-identifies the files, asserts one study, series and patient, and imports them into an image store. No
upload session exists for it, failures are kept where no API shows them (here: the log), and the uploads are deleted
whether the import worked or not. The emulator builds the series with the same builder as other imports and names
the image ``image_name``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

from gcbulk.emulator.context import Context
from gcbulk.emulator.image_builder import InputFile, build_images, is_dicom
from gcbulk.emulator.importer import store_image
from gcbulk.emulator.store import UPLOAD_COMPLETED, SocketValue, UploadSession, User, new_uuid
from gcbulk.emulator.uploads import delete_upload, upload_object_path
from gcbulk.emulator.values import is_editable, put_value

logger = logging.getLogger(__name__)


async def import_dicom_image_set(
    context: Context, user: User, display_set_pk: str, socket_slug: str, upload_pks: list[str], image_name: str
) -> None:
    store = context.store
    uploads = [store.uploads.get(pk) for pk in upload_pks]
    # Never listed: the server makes no RawImageUploadSession for a DICOM image set (contract §10).
    hidden = UploadSession(pk=new_uuid(), creator=user, created=context.clock.now(), upload_pks=upload_pks)
    work_dir = context.config.data_dir / "imports" / hidden.pk
    try:
        if any(upload is None or upload.status != UPLOAD_COMPLETED for upload in uploads):
            logger.info("DICOM image set for %s/%s failed: an upload is gone or unfinished", display_set_pk,
                        socket_slug)
            return
        inputs = [InputFile(u.filename, upload_object_path(context, u)) for u in uploads if u is not None]
        if not all(is_dicom(i.path) for i in inputs):
            logger.info("DICOM image set for %s/%s failed: not every file is DICOM", display_set_pk, socket_slug)
            return
        result = await asyncio.to_thread(build_images, inputs, work_dir)
        if len(result.images) != 1 or result.file_errors:
            logger.info("DICOM image set for %s/%s failed: the files are not one DICOM series (%s)",
                        display_set_pk, socket_slug, result.file_errors or f"{len(result.images)} images")
            return
        display_set = store.display_sets.get(display_set_pk)
        if display_set is None or not is_editable(store, display_set):
            return
        image = store_image(context, hidden, result.images[0])
        image.name = image_name
        image.origin_session_pk = None
        put_value(store, display_set, SocketValue(pk=store.next_int_pk(), socket_slug=socket_slug,
                                                  image_pk=image.pk))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        # Deleted even when the import failed (contract §10).
        for upload in uploads:
            if upload is not None and upload.pk in store.uploads:
                delete_upload(context, upload)

"""The asynchronous import worker: upload sessions become images, file uploads become file values (docs/gc-api.md §2, §3, §9).

The real server hands both to Celery; here they are asyncio tasks on the API app's loop. Each waits
``config.import_delay_seconds`` (the worker's pick-up latency), then takes one of ``MAX_PARALLEL_IMPORTS`` slots and
parses the files in a thread (``image_builder``), so the event loop keeps serving while SimpleITK works.

Outcomes mirror ``build_images`` and its linked tasks on the server:

* no image built → Failed, ``"N files could not be imported"`` — prefixed with ``"Image validation for socket <title>
  failed with error: "`` (and a final ".") when the session targets a display-set socket;
* images built → Succeeded (``error_message`` "N files could not be imported" if some files formed no image), the
  uploads are consumed (deleted), then the target is linked: a display-set socket takes
  exactly one image (otherwise the session turns Failed with "Image imports should result in a single image"), a Mask
  answer gets ``answer_image``;
* duplicate filenames, vanished or unfinished uploads, anything unexpected → Failed with the server's messages.

Failed imports leave their uploads for the 24 h sweep, as on the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from gcbulk.emulator.context import CONTEXT, Context
from gcbulk.emulator.image_builder import (
    BuildResult,
    BuiltImage,
    DuplicateFilesError,
    InputFile,
    build_images,
)
from gcbulk.emulator.notifications import notify
from gcbulk.emulator.objects import IMAGES_BUCKET, UPLOADS_BUCKET
from gcbulk.emulator.socket_kinds import JSON_FILE_KINDS, json_file_error, voxel_value_error
from gcbulk.emulator.store import (
    SESSION_FAILED,
    SESSION_REQUEUED,
    SESSION_SUCCEEDED,
    UPLOAD_COMPLETED,
    ArchiveItem,
    Image,
    ImageFile,
    SocketValue,
    UploadSession,
    new_uuid,
)
from gcbulk.emulator.uploads import consume_upload, upload_object_path
from gcbulk.emulator.values import file_value_key, is_editable, put_value
from gcbulk.emulator.visibility import study_of_answer

logger = logging.getLogger(__name__)

# The machine has 2 cores; more parallel SimpleITK work would only queue in the thread pool.
MAX_PARALLEL_IMPORTS = 2

UNEXPECTED_ERROR = "An unexpected error occurred"
DUPLICATE_FILES = "Duplicate files uploaded, please try again with a unique set of files"
SINGLE_IMAGE_REQUIRED = "Image imports should result in a single image"
DEFAULT_ARCHIVE_SOCKET = "generic-medical-image"


class ImportWorker:
    """Schedules imports and file copies on the running loop, and cancels what is left when the app stops."""

    def __init__(self, context: Context) -> None:
        self.context = context
        capacity = context.config.capacity
        self._slots = asyncio.Semaphore(capacity.import_workers if capacity else MAX_PARALLEL_IMPORTS)
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule_session(self, session: UploadSession) -> None:
        """Marks the session Re-Queued (it now counts as an active import) and imports it after the delay."""
        session.status = SESSION_REQUEUED
        self._spawn(self._delayed(import_session(self.context, session)))

    def schedule_file_copy(self, display_set_pk: str, socket_slug: str, upload_pk: str) -> None:
        self._spawn(self._delayed(copy_file_value(self.context, display_set_pk, socket_slug, upload_pk)))

    def schedule(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs other background work (a DICOM image set import) after the delay, in an import slot."""
        self._spawn(self._delayed(work))

    async def _delayed(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await asyncio.sleep(self.context.config.import_delay_seconds)
            async with self._slots:
                loop = asyncio.get_running_loop()
                started = loop.time()
                try:
                    await work
                finally:  # the import worker's time, lock contention included (GET /_admin/counters)
                    self.context.counters.import_busy_seconds += loop.time() - started
        except Exception:  # noqa: BLE001 - a background task has no caller to raise to
            logger.exception("background import task failed")
        finally:
            work.close()  # a no-op once awaited; stops the "never awaited" warning when cancelled during the delay

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, _app: web.Application | None = None) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


IMPORT_WORKER = web.AppKey("import_worker", ImportWorker)


def install(app: web.Application) -> ImportWorker:
    """The app's worker, created on first call (several modules' ``setup`` ask for it)."""
    if IMPORT_WORKER not in app:
        worker = ImportWorker(app[CONTEXT])
        app[IMPORT_WORKER] = worker
        app.on_cleanup.append(worker.close)
    return app[IMPORT_WORKER]


def worker_of(request: web.Request) -> ImportWorker:
    return request.app[IMPORT_WORKER]


TIFF_SUFFIXES = (".tif", ".tiff")


def active_post_processing_tasks(context: Context, user_pk: int) -> int:
    """The user's imports that will need TIFF post-processing and are scheduled or running: only these count toward
    the server's 16-task limit (docs/gc-api.md §10)."""
    store = context.store
    return sum(
        1
        for s in store.upload_sessions.values()
        if s.creator.pk == user_pk
        and s.status == SESSION_REQUEUED
        and any(
            pk in store.uploads and store.uploads[pk].filename.lower().endswith(TIFF_SUFFIXES) for pk in s.upload_pks
        )
    )


# -- image imports ----------------------------------------------------------------------------------------------------


def _fail(context: Context, session: UploadSession, message: str) -> None:
    socket = context.store.sockets.get(session.target_socket_slug or "")
    if socket is not None:
        message = f"Image validation for socket {socket.title} failed with error: {message}."
    session.status = SESSION_FAILED
    session.error_message = message


async def import_session(context: Context, session: UploadSession, inputs: list[InputFile] | None = None) -> None:
    """Imports ``session`` now: builds its images, stores them, and links them to the session's target.

    ``inputs`` replaces the session's uploads (the admin seeding uses local files); uploads are consumed only when
    they were the input.
    """
    store = context.store
    uploads = [store.uploads.get(pk) for pk in session.upload_pks]
    if inputs is None:
        if any(upload is None or upload.status != UPLOAD_COMPLETED for upload in uploads):
            # The server's download of a deleted or unfinished upload raises, which it reports as unexpected.
            _fail(context, session, UNEXPECTED_ERROR)
            return
        inputs = [InputFile(upload.filename, upload_object_path(context, upload)) for upload in uploads]
        consumed = uploads
    else:
        consumed = []
    work_dir = context.config.data_dir / "imports" / session.pk
    started = asyncio.get_running_loop().time()
    input_bytes = sum(i.path.stat().st_size for i in inputs if i.path.is_file())
    try:
        result: BuildResult = await asyncio.to_thread(build_images, inputs, work_dir)
        if not result.images:
            _fail(context, session, result.default_error_message)
            return
        images = [store_image(context, session, built) for built in result.images]
    except DuplicateFilesError:
        _fail(context, session, DUPLICATE_FILES)
        return
    except Exception:  # noqa: BLE001 - the server reports any other failure with one message
        logger.exception("import of upload session %s failed", session.pk)
        _fail(context, session, UNEXPECTED_ERROR)
        return
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    capacity = context.config.capacity
    if capacity:  # the worker is held for the real build time (docs/gc-api.md §10)
        elapsed = asyncio.get_running_loop().time() - started
        await asyncio.sleep(max(0.0, capacity.build_seconds(input_bytes) - elapsed))
    session.image_pks = [image.pk for image in images]
    session.status = SESSION_SUCCEEDED
    if result.file_errors:  # the server's Succeeded sessions keep the count of the files it could not read (§10)
        session.error_message = result.default_error_message
    for upload in consumed:
        if upload is not None and upload.pk in store.uploads:
            consume_upload(context, upload)
    # The server links the image in a separate task *after* the session turned Succeeded (docs/gc-api.md §10): a client
    # that takes Succeeded for "the value is there" meets this gap; the uploads are already gone by then.
    await asyncio.sleep(context.config.link_delay_seconds)
    if capacity and session.target_value_set_pk:
        await _link_under_lock(context, session, images)
    else:
        _link_images(context, session, images)


async def _link_under_lock(context: Context, session: UploadSession, images: list[Image]) -> None:
    """The server locks the display set to link a value; a second link at the same moment cannot take the lock and
    sleeps a random 0–5 s *inside its worker* before retrying (docs/gc-api.md §10: why 2 × 1 MiB cases take 2.3 s)."""
    capacity = context.config.capacity
    assert capacity is not None
    pk = session.target_value_set_pk or ""
    while pk in context.linking_display_sets:
        await asyncio.sleep(random.uniform(0.0, capacity.lock_retry_max_seconds))
    context.linking_display_sets.add(pk)
    try:
        await asyncio.sleep(capacity.link_seconds)
        _link_images(context, session, images)
    finally:
        context.linking_display_sets.discard(pk)


def store_image(context: Context, session: UploadSession, built: BuiltImage) -> Image:
    pk = new_uuid()
    file_pk = new_uuid()
    filename = f"{pk}.mha"
    key = f"images/{pk[0:2]}/{pk[2:4]}/{pk}/{file_pk}/{filename}"
    destination = context.objects.object_path(IMAGES_BUCKET, key)
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built.mha_path, destination)  # the work dir is under data_dir: a rename, no copy
    image = Image(
        pk=pk,
        name=built.name,
        creator=session.creator,
        origin_session_pk=session.pk,
        width=built.width,
        height=built.height,
        depth=built.depth,
        color_space=built.color_space,
        modality=built.modality,
        voxel_width_mm=built.voxel_width_mm,
        voxel_height_mm=built.voxel_height_mm,
        voxel_depth_mm=built.voxel_depth_mm,
        shape=built.shape,
        shape_without_color=built.shape_without_color,
        files=[ImageFile(pk=file_pk, image_pk=pk, filename=filename, image_type="MHD", object_key=key)],
        window_center=built.window_center,
        window_width=built.window_width,
        element_type=built.element_type,
        segments=built.segments,
    )
    context.store.images[pk] = image
    return image


def _link_images(context: Context, session: UploadSession, images: list[Image]) -> None:
    store = context.store
    if session.target_value_set_pk:
        display_set = store.value_set(session.target_value_set_pk)
        if display_set is None:
            return
        socket = store.sockets.get(session.target_socket_slug or "")
        refusal = voxel_value_error(socket, images[0].segments) if socket and len(images) == 1 else None
        if len(images) != 1:
            _fail(context, session, SINGLE_IMAGE_REQUIRED)
        elif refusal:
            _fail(
                context, session, refusal
            )  # the server ends up with ".." here: its text and the wrapper both end in "."
        elif not is_editable(store, display_set):
            _fail(context, session, UNEXPECTED_ERROR)
        else:
            value = SocketValue(
                pk=store.next_int_pk(), socket_slug=session.target_socket_slug or "", image_pk=images[0].pk
            )
            put_value(store, display_set, value)
    elif session.target_archive_pk:
        add_images_to_archive(context, session, images)
    elif session.target_answer_pk:
        answer = store.answers.get(session.target_answer_pk)
        if answer is None:
            return
        if len(images) != 1:
            _fail(context, session, SINGLE_IMAGE_REQUIRED)
            return
        answer.answer_image_pk = images[0].pk
        images[0].answer_study_pks.add(study_of_answer(store, answer).pk)


def add_images_to_archive(context: Context, session: UploadSession, images: list[Image]) -> None:
    """The server's ``add_images_to_archive`` (docs/gc-api.md §12): each image becomes a new, untitled item of the
    archive with one value of the session's socket (``generic-medical-image`` when the session named none); an image
    some item of the archive already shows in that socket is skipped, so a re-run task adds no duplicates."""
    store = context.store
    archive = store.archives.get(session.target_archive_pk or "")
    socket_slug = session.target_socket_slug or DEFAULT_ARCHIVE_SOCKET
    if archive is None or socket_slug not in store.sockets:
        _fail(context, session, UNEXPECTED_ERROR)  # the task's ``objects.get`` raises: the server's unexpected error
        return
    for image in images:
        if any(
            item.archive_pk == archive.pk
            and any(v.image_pk == image.pk and v.socket_slug == socket_slug for v in item.values.values())
            for item in store.archive_items.values()
        ):
            continue
        shared = next(  # the task reuses a value of the same socket and image
            (
                value
                for value_set in store.value_sets()
                for value in value_set.values.values()
                if value.socket_slug == socket_slug and value.image_pk == image.pk
            ),
            None,
        )
        item = ArchiveItem(pk=new_uuid(), archive_pk=archive.pk, title="", created=context.clock.now())
        store.archive_items[item.pk] = item
        value = shared or SocketValue(pk=store.next_int_pk(), socket_slug=socket_slug, image_pk=image.pk)
        put_value(store, item, value)


# -- file values ------------------------------------------------------------------------------------------------------


async def copy_file_value(context: Context, display_set_pk: str, socket_slug: str, upload_pk: str) -> None:
    """Copies an upload into a new file value of the display set, then consumes the upload (``add_file_to_object``).

    Failures reach only the server's notifications, never the API: here they are logged and the value stays unset.
    """
    store = context.store
    display_set = store.value_set(display_set_pk)
    upload = store.uploads.get(upload_pk)
    if display_set is None:
        return
    if upload is None or upload.status != UPLOAD_COMPLETED:
        logger.info("file value for %s/%s not set: User upload is not completed.", display_set_pk, socket_slug)
        return
    socket = store.sockets[socket_slug]
    if socket.kind in JSON_FILE_KINDS:
        # The server parses and schema-checks a JSON file in the background; a refusal leaves the value absent and
        # is told only through notifications (docs/gc-api.md §10). The upload stays for the 24 h sweep.
        content = await asyncio.to_thread(upload_object_path(context, upload).read_bytes)
        refusal = json_file_error(socket, content)
        if refusal:
            notify(context, upload.creator, f"Validation for socket {socket.title} failed: {refusal}")
            return
    value = SocketValue(pk=store.next_int_pk(), socket_slug=socket_slug)
    value.file_key = file_value_key(value.pk, upload.filename)
    await asyncio.to_thread(context.objects.copy, UPLOADS_BUCKET, upload.key, IMAGES_BUCKET, value.file_key)
    if not is_editable(store, display_set):
        context.objects.delete(IMAGES_BUCKET, value.file_key)
        logger.info("file value for %s/%s not set: %s", display_set_pk, socket_slug, UNEXPECTED_ERROR)
        return
    put_value(store, display_set, value)
    if upload.pk in store.uploads:
        consume_upload(context, upload)

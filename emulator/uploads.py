"""The UserUpload API (docs/gc-api.md §1): S3 multipart uploads owned by their creator.

Routes (all under ``/api/v1/``): ``POST uploads/``, ``GET uploads/``, ``GET uploads/{pk}/``, and the actions
``PATCH uploads/{pk}/{s3_upload_id}/generate-presigned-urls/``, ``GET …/list-parts/``,
``PATCH …/complete-multipart-upload/``, ``PATCH …/abort-multipart-upload/``. The order of the checks follows the
server's ``UserUploadViewSet``: permission (anonymous writes → 401), ``get_object`` (404), the ``s3_upload_id``
match (bare 404), then the action. What the server does not catch (a ``RuntimeError`` from the model, a botocore
error from S3) becomes a non-JSON 500, as Django answers in production.

Helpers for the other emulator modules (upload sessions, display-set values, the sweep):

* ``completed_upload_for(context, user, url, field="uploads") -> Upload`` resolves a hyperlink to a Completed upload
  of ``user``; otherwise raises the 400 DRF gives, ``{field: ["Invalid hyperlink - Object does not exist."]}`` (or
  "No URL match." / "Incorrect type." for a value that is no upload URL at all).
* ``upload_object_path(context, upload) -> Path``: where a Completed upload's bytes are on disk.
* ``consume_upload(context, upload)``: what the server does after a successful import or file copy: delete the row
  and its object. ``delete_upload`` is the same deletion as the sweep uses (it aborts an Initialized upload's parts).
* ``serialize_upload(request, upload)`` and ``upload_api_url(request, upload)``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from gcbulk.emulator.context import Context, context_of
from gcbulk.emulator.http import (
    absolute_url,
    bad_request,
    current_user,
    forbidden,
    iso,
    json_response,
    not_found,
    paginate,
    pk_from_url,
    read_json,
    require_user,
)
from gcbulk.emulator.objects import UPLOADS_BUCKET, S3Error
from gcbulk.emulator.s3 import presigned_part_url
from gcbulk.emulator.store import (
    UPLOAD_ABORTED,
    UPLOAD_COMPLETED,
    UPLOAD_INITIALIZED,
    Upload,
    User,
    new_uuid,
)
from gcbulk.emulator.upload_fields import (
    validate_filename,
    validate_part_numbers,
    validate_parts,
)

TOO_MANY_UPLOADS = "You have created too many uploads. Please try again later."
UPLOAD_LIMIT_REACHED = "Upload limit reached"
INVALID_HYPERLINK = "Invalid hyperlink - Object does not exist."

# Django's production 500 page: gcapi and other clients see HTML, not JSON, for any error the server does not catch.
DJANGO_500_PAGE = """<!doctype html>
<html lang="en">
<head>
  <title>Server Error (500)</title>
</head>
<body>
  <h1>Server Error (500)</h1><p></p>
</body>
</html>
"""
# The emulator names the swallowed exception in this header so tests can tell one 500 from another; the real server
# sends nothing of the kind (it only logs it).
ERROR_HEADER = "X-Emulator-Error"


def server_error(reason: str) -> web.HTTPInternalServerError:
    return web.HTTPInternalServerError(text=DJANGO_500_PAGE, content_type="text/html", headers={ERROR_HEADER: reason})


def _botocore_error(operation: str, error: S3Error) -> web.HTTPInternalServerError:
    return server_error(
        f"ClientError: An error occurred ({error.code}) when calling the {operation} operation: {error.message}"
    )


def _not_initialized() -> web.HTTPInternalServerError:
    return server_error("RuntimeError: Upload is not initialized")


# -- helpers for other modules --------------------------------------------------------------------------------------


def upload_api_url(request: web.Request, upload: Upload) -> str:
    return absolute_url(request, f"uploads/{upload.pk}/")


def serialize_upload(request: web.Request, upload: Upload) -> dict[str, Any]:
    return {
        "pk": upload.pk,
        "created": iso(upload.created),
        "filename": upload.filename,
        "key": upload.key,
        "s3_upload_id": upload.s3_upload_id,
        "status": upload.status,
        "api_url": upload_api_url(request, upload),
    }


def completed_upload_for(context: Context, user: User, url: Any, field: str = "uploads") -> Upload:
    """The Completed upload of ``user`` that ``url`` links to; raises DRF's hyperlink 400 under ``field`` otherwise.

    Another user's upload, an unfinished one and a deleted one are all "does not exist": the server's queryset only
    holds the requester's Completed uploads.
    """
    if not isinstance(url, str):
        raise bad_request({field: [f"Incorrect type. Expected URL string, received {type(url).__name__}."]})
    pk = pk_from_url(url, "uploads")
    if pk is None:
        raise bad_request({field: ["Invalid hyperlink - No URL match."]})
    upload = context.store.uploads.get(pk)
    if upload is None or upload.creator.pk != user.pk or upload.status != UPLOAD_COMPLETED:
        raise bad_request({field: [INVALID_HYPERLINK]})
    return upload


def upload_object_path(context: Context, upload: Upload) -> Path:
    """The file holding a Completed upload's bytes."""
    return context.objects.object_path(UPLOADS_BUCKET, upload.key)


def delete_upload(context: Context, upload: Upload) -> None:
    """Deletes the row and what it holds in S3, as the server's ``post_delete`` hook does (docs/gc-api.md §1)."""
    context.store.uploads.pop(upload.pk, None)
    if upload.status == UPLOAD_INITIALIZED:
        context.objects.multipart_uploads.pop(upload.s3_upload_id, None)
        context.objects.discard_multipart(upload.s3_upload_id)
    elif upload.status == UPLOAD_COMPLETED:
        context.objects.delete(UPLOADS_BUCKET, upload.key)


def consume_upload(context: Context, upload: Upload) -> None:
    """After a successful image import or file copy the server deletes the upload and its object (docs/gc-api.md §1)."""
    delete_upload(context, upload)


def _botocore_parts(parts: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """The validated parts go to boto3 as they are; botocore's own parameter check rejects what S3 cannot take.

    So a part without ETag or PartNumber, or one carrying list-parts' ``Size``/``LastModified``, is a 500.
    """
    for index, part in enumerate(parts):
        for unknown in ("LastModified", "Size"):
            if unknown in part:
                raise server_error(
                    f"ParamValidationError: Parameter validation failed: Unknown parameter in "
                    f'MultipartUpload.Parts[{index}]: "{unknown}", must be one of: ETag, ChecksumCRC32, '
                    f"ChecksumCRC32C, ChecksumCRC64NVME, ChecksumSHA1, ChecksumSHA256, PartNumber"
                )
        for required in ("ETag", "PartNumber"):
            if required not in part:
                raise server_error(
                    f"ParamValidationError: Parameter validation failed: Missing required parameter in "
                    f'MultipartUpload.Parts[{index}]: "{required}"'
                )
    return [(part["PartNumber"], part["ETag"]) for part in parts]


# -- lookups --------------------------------------------------------------------------------------------------------


def _visible_upload(request: web.Request) -> Upload:
    """``get_object``: the list is filtered to the requester's own uploads, so anything else is a 404."""
    user = current_user(request)
    upload = context_of(request).store.uploads.get(request.match_info["pk"])
    if upload is None or user is None or upload.creator.pk != user.pk:
        raise not_found("UserUpload")
    return upload


def _action_upload(request: web.Request, *, write: bool) -> Upload:
    if write:
        require_user(request)
    upload = _visible_upload(request)
    if upload.s3_upload_id != request.match_info["s3_upload_id"]:
        raise not_found()
    return upload


def _can_upload_more(context: Context, upload: Upload) -> bool:
    """The model's ``can_upload_more``: Initialized, and this upload's parts plus every object still under the
    creator's key prefix below the quota (docs/gc-api.md §1)."""
    if upload.status != UPLOAD_INITIALIZED:
        return False
    try:
        pending = context.objects.open_multipart(upload.s3_upload_id).pending_bytes
    except S3Error as error:  # being completed right now
        raise _botocore_error("ListParts", error) from None
    used = pending + context.objects.total_size(UPLOADS_BUCKET, f"uploads/{upload.creator.pk}/")
    config = context.config
    return used < (config.verified_byte_quota if upload.creator.verified else config.unverified_byte_quota)


# -- handlers -------------------------------------------------------------------------------------------------------


async def create_upload(request: web.Request) -> web.Response:
    user = require_user(request)
    context = context_of(request)
    filename = validate_filename(await read_json(request))
    existing = sum(1 for upload in context.store.uploads.values() if upload.creator.pk == user.pk)
    # docs/gc-api.md §1: refused once the user holds *more than* the cap (gcapi's docs advise retrying after 5 minutes).
    if existing > context.config.max_uploads_per_user:
        raise bad_request({"non_field_errors": [TOO_MANY_UPLOADS]})
    upload = Upload(
        pk=new_uuid(),
        creator=user,
        filename=filename,
        created=context.clock.now(),
        status=UPLOAD_INITIALIZED,
        s3_upload_id="",
    )
    # The server creates the S3 multipart upload inside the create request, so "Pending" is never seen.
    upload.s3_upload_id = context.objects.create_multipart(UPLOADS_BUCKET, upload.key)
    context.store.uploads[upload.pk] = upload
    context.counters.uploads_held(user.pk, existing + 1)
    return json_response(serialize_upload(request, upload), status=201)


async def list_uploads(request: web.Request) -> web.Response:
    user = current_user(request)
    uploads = (
        []
        if user is None
        else [upload for upload in context_of(request).store.uploads.values() if upload.creator.pk == user.pk]
    )
    # No ordering on the server (docs/gc-api.md §10): the database returns rows in no set order. Ordering by the random
    # pk models that: a new row lands anywhere, so limit/offset paging while rows are added can skip or repeat.
    uploads.sort(key=lambda upload: upload.pk)
    return paginate(request, uploads, lambda upload: serialize_upload(request, upload))


async def retrieve_upload(request: web.Request) -> web.Response:
    return json_response(serialize_upload(request, _visible_upload(request)))


async def delete_upload_request(request: web.Request) -> web.Response:
    """DELETE is refused with 403: the server checks permissions before the method (docs/gc-api.md §10)."""
    require_user(request)
    raise forbidden()


async def generate_presigned_urls(request: web.Request) -> web.Response:
    context = context_of(request)
    upload = _action_upload(request, write=True)
    # The view checks the quota before it even validates the body (docs/gc-api.md §1).
    if not _can_upload_more(context, upload):
        raise forbidden(UPLOAD_LIMIT_REACHED)
    part_numbers = validate_part_numbers(await read_json(request))
    multipart = context.objects.open_multipart(upload.s3_upload_id)
    urls = {str(number): presigned_part_url(context, multipart, number) for number in part_numbers}
    return json_response({**serialize_upload(request, upload), "presigned_urls": urls})


def _s3_timestamp(moment: datetime) -> str | None:
    """S3 reports LastModified to the millisecond; DRF then prints it like any datetime."""
    return iso(moment.replace(microsecond=moment.microsecond // 1000 * 1000))


async def list_parts(request: web.Request) -> web.Response:
    context = context_of(request)
    upload = _action_upload(request, write=False)
    if upload.status != UPLOAD_INITIALIZED:
        raise _not_initialized()
    try:
        multipart = context.objects.open_multipart(upload.s3_upload_id)
    except S3Error as error:
        raise _botocore_error("ListParts", error) from None
    parts = [
        {
            "ETag": part.etag,
            "PartNumber": part.number,
            "LastModified": _s3_timestamp(part.last_modified),
            "Size": part.size,
        }
        for part in sorted(multipart.parts.values(), key=lambda part: part.number)
    ]
    return json_response({**serialize_upload(request, upload), "parts": parts})


async def complete_multipart_upload(request: web.Request) -> web.Response:
    context = context_of(request)
    upload = _action_upload(request, write=True)
    parts = validate_parts(await read_json(request))
    if upload.status != UPLOAD_INITIALIZED:
        raise _not_initialized()
    requested = _botocore_parts(parts)
    try:
        chosen = context.objects.check_completion(upload.s3_upload_id, requested)
    except S3Error as error:
        raise _botocore_error("CompleteMultipartUpload", error) from None
    multipart = context.objects.take_multipart(upload.s3_upload_id)
    # Concatenating gigabytes must not stall the event loop: the other uploads go on meanwhile.
    await asyncio.to_thread(context.objects.assemble, multipart, chosen)
    upload.status = UPLOAD_COMPLETED
    return json_response(serialize_upload(request, upload))


async def abort_multipart_upload(request: web.Request) -> web.Response:
    context = context_of(request)
    upload = _action_upload(request, write=True)
    if upload.status != UPLOAD_INITIALIZED:
        raise _not_initialized()
    try:
        context.objects.abort_multipart(upload.s3_upload_id)
    except S3Error as error:
        raise _botocore_error("AbortMultipartUpload", error) from None
    upload.s3_upload_id = ""
    upload.status = UPLOAD_ABORTED
    return json_response(serialize_upload(request, upload))


def setup(app: web.Application) -> None:
    router = app.router
    router.add_post("/api/v1/uploads/", create_upload)
    router.add_get("/api/v1/uploads/", list_uploads)
    router.add_get("/api/v1/uploads/{pk}/", retrieve_upload)
    router.add_delete("/api/v1/uploads/{pk}/", delete_upload_request)
    action = "/api/v1/uploads/{pk}/{s3_upload_id}/"
    router.add_patch(action + "generate-presigned-urls/", generate_presigned_urls)
    router.add_get(action + "list-parts/", list_parts)
    router.add_patch(action + "complete-multipart-upload/", complete_multipart_upload)
    router.add_patch(action + "abort-multipart-upload/", abort_multipart_upload)

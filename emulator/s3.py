"""The S3 site: presigned part PUTs into the uploads bucket and presigned GETs of objects (image downloads).

Like S3, it wants no Authorization header (one that is sent is ignored): the signature in the query string is the
only credential. Errors come as S3's XML. Part bodies are streamed to disk chunk by chunk while their MD5 is computed,
so a 64 MiB part never sits in memory whole (issue 3: a 2 GiB upload keeps the emulator under 200 MiB RSS).

For other modules: ``presigned_part_url(context, multipart, part_number)`` (used by ``uploads``) and
``presigned_get_url(context, bucket, key, expires_in=None)`` (used by the image-file view for its 302; default expiry
``config.download_url_expiry_seconds``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import quote
from xml.sax.saxutils import escape

import aiofiles
from aiohttp import web

from gcbulk.emulator.context import Context, context_of
from gcbulk.emulator.faults import CORRUPT_BODY_KEY, shaper_of
from gcbulk.emulator.objects import (
    MAX_PART_NUMBER,
    MAX_PART_SIZE,
    MIN_PART_NUMBER,
    MultipartUpload,
    Part,
    S3Error,
    SignatureError,
    no_such_upload,
)

# Writes to disk go in blocks of this size: few thread hops per part, little memory per stream.
WRITE_BLOCK = 1024**2
READ_BLOCK = 1024**2


def _object_path(bucket: str, key: str) -> str:
    return f"/{bucket}/{key}"


def _url(context: Context, path: str, query: str) -> str:
    return f"{context.s3_base_url}{quote(path)}?{query}"


def presigned_part_url(context: Context, multipart: MultipartUpload, part_number: int) -> str:
    """An ``upload_part`` URL like boto3's: ``/<bucket>/<key>?uploadId=…&partNumber=N&X-Amz-…`` (docs/gc-api.md §9)."""
    path = _object_path(multipart.bucket, multipart.key)
    params = {"uploadId": multipart.upload_id, "partNumber": str(part_number)}
    query = context.signer.signed_query("PUT", path, context.config.presigned_url_expiry_seconds, params)
    return _url(context, path, query)


def presigned_get_url(context: Context, bucket: str, key: str, expires_in: float | None = None) -> str:
    """A short-lived GET URL for an object (the image-file download target, docs/gc-api.md §4)."""
    path = _object_path(bucket, key)
    expiry = context.config.download_url_expiry_seconds if expires_in is None else expires_in
    return _url(context, path, context.signer.signed_query("GET", path, expiry, {}))


def s3_error(status: int, code: str, message: str, **details: str) -> web.Response:
    extra = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in details.items())
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}'
        f"</Message>{extra}</Error>"
    )
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def _from_s3_error(error: S3Error, **details: str) -> web.Response:
    return s3_error(error.status, error.code, error.message, **details)


def _verify(request: web.Request) -> dict[str, str] | web.Response:
    bucket, key = request.match_info["bucket"], request.match_info["key"]
    try:
        return context_of(request).signer.verify(request.method, _object_path(bucket, key), dict(request.query))
    except SignatureError as error:
        return s3_error(403, error.code, str(error))


def _last_modified(context: Context) -> datetime:
    now = context.clock.now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


async def put_part(request: web.Request) -> web.StreamResponse:
    verified = _verify(request)
    if isinstance(verified, web.Response):
        return verified
    context = context_of(request)
    upload_id = verified.get("uploadId", "")
    raw_number = verified.get("partNumber", "")
    if not upload_id or not raw_number:
        return s3_error(400, "InvalidRequest", "This emulator only accepts part uploads (uploadId and partNumber).")
    if not raw_number.isdigit() or not MIN_PART_NUMBER <= int(raw_number) <= MAX_PART_NUMBER:
        return s3_error(
            400,
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive",
            ArgumentName="partNumber",
            ArgumentValue=raw_number,
        )
    part_number = int(raw_number)
    multipart = context.objects.multipart_uploads.get(upload_id)
    bucket, key = request.match_info["bucket"], request.match_info["key"]
    if multipart is None or (multipart.bucket, multipart.key) != (bucket, key):
        return _from_s3_error(no_such_upload(), UploadId=upload_id)
    expected = request.content_length
    if expected is None:
        return s3_error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
    if expected > MAX_PART_SIZE:
        return s3_error(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
            ProposedSize=str(expected),
            MaxSizeAllowed=str(MAX_PART_SIZE),
        )

    upload_pk = key.rsplit("/", 1)[-1]
    context.counters.part_put_attempts[(upload_pk, part_number)] += 1
    received = context.objects.temporary_part_path(upload_id, part_number)
    shaper = shaper_of(request)
    digest = hashlib.md5()
    size = 0
    try:
        async with aiofiles.open(received, "wb") as sink:
            block = bytearray()
            corrupt = request.get(CORRUPT_BODY_KEY, False)
            async for chunk in request.content.iter_chunked(WRITE_BLOCK):
                await shaper.pace(len(chunk))
                if corrupt and chunk:  # a fault rule's corrupt_body: the first byte is stored flipped
                    chunk, corrupt = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
                digest.update(chunk)
                size += len(chunk)
                block += chunk
                if len(block) >= WRITE_BLOCK:
                    await sink.write(block)
                    block.clear()
            if block:
                await sink.write(block)
    except FileNotFoundError:
        # The multipart upload was aborted or completed (its folder removed) while this body arrived.
        return _from_s3_error(no_such_upload(), UploadId=upload_id)
    except BaseException:
        received.unlink(missing_ok=True)
        raise
    if size != expected:
        received.unlink(missing_ok=True)
        return s3_error(
            400, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header"
        )
    etag = f'"{digest.hexdigest()}"'
    try:
        context.objects.store_part(upload_id, received, Part(part_number, etag, size, _last_modified(context)))
    except S3Error as error:
        return _from_s3_error(error, UploadId=upload_id)
    context.counters.part_puts[(upload_pk, part_number)] += 1
    return web.Response(status=200, headers={"ETag": etag})


def _requested_range(request: web.Request, size: int) -> tuple[int, int] | None | web.Response:
    """(start, stop) for a satisfiable single Range, None for the whole object, or a 416 response.

    aiohttp parses the header; a malformed one is ignored, as S3 ignores it.
    """
    if "Range" not in request.headers:
        return None
    try:
        wanted = request.http_range
    except ValueError:
        return None
    start, stop = wanted.start, wanted.stop
    if start is None and stop is None:
        return None
    if start is not None and start < 0:  # a suffix: the last -start bytes
        start, stop = max(size + start, 0), size
    start = start or 0
    stop = size if stop is None else min(stop, size)
    if start >= size or start >= stop:
        response = s3_error(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
            RangeRequested=request.headers["Range"],
            ActualObjectSize=str(size),
        )
        response.headers["Content-Range"] = f"bytes */{size}"
        return response
    return start, stop


async def get_object(request: web.Request) -> web.StreamResponse:
    verified = _verify(request)
    if isinstance(verified, web.Response):
        return verified
    context = context_of(request)
    bucket, key = request.match_info["bucket"], request.match_info["key"]
    try:
        path = context.objects.object_path(bucket, key)
        stat = path.stat()
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return s3_error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
    if not path.is_file():
        return s3_error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
    size = stat.st_size
    wanted = _requested_range(request, size)
    if isinstance(wanted, web.Response):
        return wanted
    start, stop = wanted if wanted is not None else (0, size)

    response = web.StreamResponse(status=206 if wanted is not None else 200)
    response.content_type = "binary/octet-stream"  # S3's type for objects stored without one
    response.content_length = stop - start
    response.headers["Accept-Ranges"] = "bytes"
    # Not an MD5 (S3's multipart ETags are not either): it changes whenever the object does, which is its use.
    response.headers["ETag"] = f'"{stat.st_mtime_ns:x}-{size:x}"'
    response.headers["Last-Modified"] = format_datetime(datetime.fromtimestamp(stat.st_mtime).astimezone(), True)
    if wanted is not None:
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    await response.prepare(request)
    shaper = shaper_of(request)
    async with aiofiles.open(path, "rb") as source:
        await source.seek(start)
        remaining = stop - start
        while remaining > 0:
            chunk = await source.read(min(READ_BLOCK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            if not await shaper.write(request, response, chunk):
                return response
    await response.write_eof()
    return response


def setup(app: web.Application) -> None:
    app.router.add_put("/{bucket}/{key:.+}", put_part)
    # HEAD is not routed: a presigned GET URL does not sign HEAD on S3 either.
    app.router.add_get("/{bucket}/{key:.+}", get_object, allow_head=False)

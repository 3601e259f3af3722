"""A copy across servers: the source's images travel through this machine (docs/gc-api.md §12 names an image only on
its own server). Each image file is streamed from the source's object store to a staging folder beside the copy's
job file, one chunk at a time (never whole in memory), and planned as a file of the case; the transfer engine then
uploads it to the target as any file of a case tree — multipart, resumable per part.

Downloads resume per file: a file already staged is kept (it is only renamed into place once complete); one cut short
is fetched again from its start. The staging folder is private (0700): images may hold patient data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.plan.cases import PlannedCase, PlannedFile
from gcbulk.engine.results.dicom_instances import image_files
from gcbulk.engine.results.safe_paths import safe_component
from gcbulk.engine.upload.values_patch import IMAGE
from gcbulk.safe_files import make_private_dirs

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
# The server's own bound on one upload (docs/gc-api.md §1: 128 GiB for a verified user): a larger answer is not an image.
MAX_FILE_BYTES = 128 * 1024**3


async def stage_images(source: GrandChallengeClient, cases: list[PlannedCase], staging: Path) -> list[PlannedCase]:
    """``cases`` with each image reference replaced by the image's files, downloaded under ``staging`` (the case root
    of the copy's ledger)."""
    staged = []
    for case in cases:
        items = []
        for item in case.items:
            if item.super_kind == IMAGE and item.value_json is not None and not item.files:
                folder = PurePosixPath(safe_component(case.folder), safe_component(item.socket_slug))
                files = await _download_image(source, str(json.loads(item.value_json)), staging, folder)
                item = dataclasses.replace(item, files=files, value_json=None)
            items.append(item)
        staged.append(dataclasses.replace(case, items=tuple(items)))
    return staged


async def _download_image(
    source: GrandChallengeClient, image_url: str, staging: Path, folder: PurePosixPath
) -> tuple[PlannedFile, ...]:
    image = await source.get_image(image_url)
    planned = []
    for file in await image_files(source, image):
        name = safe_component(PurePosixPath(urlsplit(str(file["file"])).path).name, fallback="image")
        relative = folder / name
        final = staging / relative
        if not final.is_file():
            make_private_dirs(final.parent, root=staging)
            await _stream_to(source, str(file["file"]), final)
        stat = final.stat()
        planned.append(PlannedFile(path=str(relative), name=name, size=stat.st_size, mtime_ns=stat.st_mtime_ns))
    if not planned:
        raise ConfigurationError(f"image {image_url} on {source.base_url} has no files to copy")
    return tuple(planned)


async def _stream_to(source: GrandChallengeClient, file_url: str, final: Path) -> None:
    partial = final.with_name(final.name + ".part")
    partial.unlink(missing_ok=True)  # cut short by an earlier run: fetched again whole (its signed URL is fresh)
    signed = await source.resolve_image_file(file_url)
    written = 0
    async with source.open_signed_download(signed) as response:
        with open(partial, "wb") as out:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                written += len(chunk)
                if written > MAX_FILE_BYTES:
                    raise ConfigurationError(f"{file_url} is larger than 128 GiB: not an image file gcbulk copies")
                out.write(chunk)
    partial.rename(final)
    log.info("staged %s (%d bytes)", final, written)

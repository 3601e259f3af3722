"""A copy across servers: the source's images travel through this machine (docs/gc-api.md §12 names an image only on
its own server). Each image file is downloaded from the source's object store into a staging folder beside the copy's
job file and planned as a file of the case; the transfer engine then uploads it to the target as any file of a case
tree — multipart, resumable per part.

The downloads are the export's (``engine/results/masks.py`` ``MaskDownloader.ensure_file``): streamed to a private
partial file off the event loop, resumed with a Range request after a cut, bounded in size and time per file, retried
with fresh signed URLs, and verified (ETag, size, SHA-256) in the staging folder's own ledger (``.gcbulk/`` in it), so
a rerun keeps every file that is whole and unchanged and fetches only the rest. The staging folder is private (0700):
images may hold patient data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import ConfigurationError, GcbulkError
from gcbulk.engine.plan.cases import PlannedCase, PlannedFile
from gcbulk.engine.results.dicom_instances import image_files
from gcbulk.engine.results.masks import DownloadLimits, MaskDownloader
from gcbulk.engine.results.safe_paths import inside, safe_component
from gcbulk.engine.upload.values_patch import IMAGE
from gcbulk.state.results_ledger import ResultsLedger

log = logging.getLogger(__name__)

# The server's own bound on one upload (docs/gc-api.md §1: 128 GiB for a verified user): a larger answer is not an
# image. Its time bound is the export's (an hour per file, retries included).
STAGING_LIMITS = DownloadLimits(max_bytes=128 * 1024**3)


class StagingFailed(GcbulkError):
    """A source image file could not be downloaded (after the export's retries and re-signed URLs); what is whole
    stays staged, and a rerun fetches only the rest."""


async def stage_images(
    source: GrandChallengeClient, cases: list[PlannedCase], staging: Path, *, source_label: str
) -> list[PlannedCase]:
    """``cases`` with each image reference replaced by the image's files, downloaded under ``staging`` (the case root
    of the copy's ledger). ``source_label`` names the copy's source in the staging folder's ledger."""
    staged = []
    with ResultsLedger.open_copy_staging(staging, source=source_label, base_url=source.base_url) as ledger:
        downloader = MaskDownloader(source, ledger, staging, STAGING_LIMITS)
        for case in cases:
            items = []
            for item in case.items:
                if item.super_kind == IMAGE and item.value_json is not None and not item.files:
                    folder = PurePosixPath(safe_component(case.folder), safe_component(item.socket_slug))
                    files = await _download_image(downloader, str(json.loads(item.value_json)), folder)
                    item = dataclasses.replace(item, files=files, value_json=None)
                items.append(item)
            staged.append(dataclasses.replace(case, items=tuple(items)))
    return staged


async def _download_image(downloader: MaskDownloader, image_url: str, folder: PurePosixPath) -> tuple[PlannedFile, ...]:
    source: GrandChallengeClient = downloader.client
    image = await source.get_image(image_url)
    planned = []
    for file in await image_files(source, image):
        name = safe_component(PurePosixPath(urlsplit(str(file["file"])).path).name, fallback="image")
        relative = folder / name
        # Keyed by where it is staged (two cases may show one image: each has its own copy); a source value replaced
        # by another image is another image pk, which downloads it again.
        failure = await downloader.ensure_file(
            str(relative), relative, source=str(image.get("pk", image_url)), file_url=str(file["file"])
        )
        if failure is not None:
            raise StagingFailed(
                f"could not download {name} of image {image_url} from {source.base_url}: "
                f"{failure}; run the copy again: whole files stay staged, the rest resumes"
            )
        stat = inside(downloader.out_dir, relative).stat()
        planned.append(PlannedFile(path=str(relative), name=name, size=stat.st_size, mtime_ns=stat.st_mtime_ns))
    if not planned:
        raise ConfigurationError(f"image {image_url} on {source.base_url} has no files to copy")
    log.info("staged image %s: %d file(s)", image_url, len(planned))
    return tuple(planned)

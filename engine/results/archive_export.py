"""``gcbulk export --archive SLUG --out DIR``: an archive's items as a case tree that ``gcbulk plan`` reads back.

What DIR holds (0700 folders, 0600 files, like a reader study's export)::

    cases/<item>/<socket>.json      a JSON value, as the server holds it
    cases/<item>/<socket>.<ext>     a file value (a PDF, a JSON file), or an image of one file (.mha, .tif)
    cases/<item>/<socket>/<name>    an image of several files (.mhd + .zraw, under the server's names, which the
                                    header refers to), or a DICOM Image Set's instances (<SOP Instance UID>.dcm)
    titles.csv, job.toml            the way back: ``gcbulk plan DIR/job.toml`` plans one case per item, each file on
                                    the socket it came from, titled as the item (engine/results/case_tree_job.py)
    .gcbulk/ledger.sqlite           the downloads' memory

``<item>`` is the item's title made safe for any file system (``engine/results/safe_paths.py``), or ``item-<pk>``
for an untitled item; names that collide, ignoring case, get the item's pk appended.

One run: list the items (docs/gc-api.md §12) and write their JSON values; download every image and file value
through the mask downloader (``engine/results/masks.py``, one code path: streamed to a partial file, resumed with
HTTP Range after a cut or a kill, size and MD5 checked against the object store, SHA-256 recorded, bounded in size and
time); then write ``titles.csv`` and ``job.toml``. A rerun lists again and downloads only what is missing, changed on
disk or replaced on the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import anyio

from gcbulk.engine.gc.client import GrandChallengeClient, display_set_title, socket_slug_of
from gcbulk.engine.gc.errors import first_error
from gcbulk.engine.results.answer_tables import pk_from_url
from gcbulk.engine.results.archive_summary import ArchiveExportSummary, ExportedItem
from gcbulk.engine.results.case_tree_job import CASES_DIR, TreeRule, rule_for, write_job, write_titles
from gcbulk.engine.results.masks import DownloadLimits, MaskDownloader
from gcbulk.engine.results.safe_paths import file_suffix, inside, relative_path, safe_component
from gcbulk.safe_files import make_private_dirs, replacing, tighten_folders
from gcbulk.state.results_ledger import ImageAnswer, ResultsLedger

log = logging.getLogger(__name__)

UNTITLED_PREFIX = "item-"
PROGRESS_SECONDS = 10.0  # a long export says what it is doing this often


@dataclass(frozen=True, kw_only=True)
class ArchiveExportOptions:
    archive: str
    out_dir: Path
    downloads: int = 8  # image and file downloads at once
    download_limits: DownloadLimits = DownloadLimits()
    ca_file: Path | None = None  # named in the job file, so that `gcbulk plan` reaches the same server


@dataclass(frozen=True, kw_only=True)
class _Download:
    """An image or file value to make present: ``key`` names it in the ledger (as an answer's pk names a mask)."""

    key: str
    socket: str
    base: PurePosixPath  # cases/<item>/<socket>: the image's files get their suffix or a folder of that name
    image_pk: str | None
    file_url: str | None
    source: str  # changes when the server's value is replaced: the image pk, or the file value's pk

    @property
    def file_path(self) -> PurePosixPath:
        return PurePosixPath(f"{self.base}.{file_suffix(self.file_url or '')}")


@dataclass
class _ListedItem:
    pk: str
    title: str
    folder: str
    values: dict[str, str] = field(default_factory=dict)  # socket → the JSON file written
    downloads: list[_Download] = field(default_factory=list)


class _FolderNames:
    """Case folder names, stable across runs (a title keeps its folder) and unique ignoring case, so the tree also
    works on macOS and Windows."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}  # casefolded name → item pk

    def folder(self, pk: str, title: str) -> str:
        fallback = safe_component(UNTITLED_PREFIX + pk, fallback="item")
        name = safe_component(title, fallback=fallback) if title else fallback
        if self._owner.setdefault(name.casefold(), pk) != pk:
            name = safe_component(f"{name}-{pk}", fallback=fallback)
            self._owner[name.casefold()] = pk
        return name


async def export_archive(
    client: GrandChallengeClient,
    options: ArchiveExportOptions,
    *,
    on_progress: Callable[[ArchiveExportSummary], None] | None = None,
    progress_seconds: float = PROGRESS_SECONDS,
) -> ArchiveExportSummary:
    """Exports the archive's items into ``options.out_dir``; safe to run again (it resumes and fetches only what is
    missing or changed). ``on_progress`` is handed the summary as it grows every ``progress_seconds`` (a long export
    says what it is doing). Raises ConfigurationError (an archive this user may not view, a bad token),
    ExportFolderTaken, LedgerLocked; a value that cannot be downloaded is in the summary's ``failures`` instead."""
    archive = await client.archive_by_slug(options.archive)
    # 0700 all through: case folders are named after item titles, which are often patient identifiers.
    make_private_dirs(options.out_dir)
    make_private_dirs(options.out_dir / CASES_DIR, root=options.out_dir)  # the job's case root, even when empty
    tighten_folders(options.out_dir)
    with ResultsLedger.open_archive_export(
        options.out_dir, archive=options.archive, base_url=client.base_url
    ) as ledger:
        run = ledger.start_run("archive")
        summary = ArchiveExportSummary(archive=options.archive, out_dir=options.out_dir)
        with ledger.run_recorded(run, summary.counts):
            try:
                async with anyio.create_task_group() as group:
                    if on_progress is not None:
                        group.start_soon(_report_progress, on_progress, summary, progress_seconds)
                    await _export(client, ledger, run, str(archive["pk"]), options, summary)
                    group.cancel_scope.cancel()
            except BaseExceptionGroup as group_error:
                # anyio wraps what the downloads or the listing raised: the caller gets the error that matters
                # (a rejected token stays an AuthenticationFailed: exit 2, not a bug).
                raise first_error(group_error) from None
        return summary


async def _report_progress(
    on_progress: Callable[[ArchiveExportSummary], None], summary: ArchiveExportSummary, seconds: float
) -> None:
    while True:
        await anyio.sleep(seconds)
        on_progress(summary)


async def _export(
    client: GrandChallengeClient,
    ledger: ResultsLedger,
    run: int,
    archive_pk: str,
    options: ArchiveExportOptions,
    summary: ArchiveExportSummary,
) -> None:
    listed: list[_ListedItem] = []
    names = _FolderNames()
    async for raw in client.iterate_archive_items(archive_pk):
        listed.append(_list_item(raw, names, options.out_dir, summary))
        summary.items_listed += 1

    ledger.run_moved(run, "downloading")
    downloader = MaskDownloader(client, ledger, options.out_dir, options.download_limits)
    summary.files = downloader.stats  # the same object: progress reports see it grow
    summary.files_wanted = sum(len(item.downloads) for item in listed)
    summary.phase = "downloading"
    pending: Iterator[_Download] = (download for item in listed for download in item.downloads)

    async def worker() -> None:
        # Workers pull from one iterator: at most ``downloads`` files in flight, however many items there are.
        for download in pending:
            if download.image_pk is not None:
                answer = ImageAnswer(
                    answer_pk=download.key,
                    image_pk=download.image_pk,
                    creator=download.socket,
                    is_ground_truth=False,
                    question_pk="",
                    display_set_pk=None,
                    case_title=None,
                )
                await downloader.ensure(answer, "", base=download.base)
            else:
                assert download.file_url is not None
                await downloader.ensure_file(
                    download.key, download.file_path, source=download.source, file_url=download.file_url
                )

    async with anyio.create_task_group() as group:
        for _ in range(max(1, options.downloads)):
            group.start_soon(worker)

    ledger.run_moved(run, "writing")
    summary.phase = "writing"
    rules: dict[TreeRule, None] = {}  # ordered: one rule per socket and file form, in first-seen order
    for entry in listed:
        files = _written_files(ledger, entry)
        case = PurePosixPath(CASES_DIR, entry.folder)
        for socket, paths in files.items():
            is_value = socket in entry.values
            inner = [PurePosixPath(path).relative_to(case) for path in paths]
            rules.setdefault(rule_for(socket, inner, is_value=is_value), None)
        summary.items.append(ExportedItem(pk=entry.pk, title=entry.title, folder=entry.folder, files=files))
    current = {item.folder for item in summary.items}
    summary.stale_folders = sorted(
        path.name for path in summary.case_root.iterdir() if path.is_dir() and path.name not in current
    )
    summary.stale_files = _stale_files(options.out_dir, summary.items)
    write_titles(options.out_dir, ((i.folder, i.title or i.folder, i.pk) for i in summary.items))
    summary.job_file = write_job(
        options.out_dir, archive=options.archive, base_url=client.base_url, ca_file=options.ca_file, rules=rules
    )


def _list_item(item: dict[str, Any], names: _FolderNames, out_dir: Path, summary: ArchiveExportSummary) -> _ListedItem:
    """Writes the item's JSON values and returns what else it needs downloaded."""
    pk = str(item["pk"])
    title = (display_set_title(item) or "").strip()
    listed = _ListedItem(pk=pk, title=title, folder=names.folder(pk, title))
    for value in item.get("values") or []:
        slug = socket_slug_of(value)
        if not slug:
            continue
        socket = safe_component(slug, fallback="socket")
        base = relative_path(CASES_DIR, listed.folder, socket)
        key = f"archive-item:{pk}:{socket}"
        interface = value.get("interface")
        super_kind = interface.get("super_kind") if isinstance(interface, dict) else None
        image_pk = pk_from_url(value.get("image"))
        if image_pk is not None:
            listed.downloads.append(
                _Download(key=key, socket=socket, base=base, image_pk=image_pk, file_url=None, source=image_pk)
            )
        elif value.get("file"):
            listed.downloads.append(
                _Download(
                    key=key,
                    socket=socket,
                    base=base,
                    image_pk=None,
                    file_url=str(value["file"]),
                    source=f"value:{value.get('pk')}",
                )
            )
        elif super_kind in ("Image", "File"):
            # The value exists but its image or file does not yet (an import or a copy still running, §10).
            summary.missing.append(f"{listed.folder}: {socket} has no {super_kind.lower()} yet; export again later")
        else:
            path = PurePosixPath(f"{base}.json")
            if _write_json(out_dir, path, value.get("value")):
                summary.values_written += 1
            else:
                summary.values_unchanged += 1
            listed.values[socket] = str(path)
    return listed


def _write_json(out_dir: Path, path: PurePosixPath, value: Any) -> bool:
    """Writes the value as JSON at ``path`` unless the file already holds exactly that; True when written."""
    text = (json.dumps(value, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    final = inside(out_dir, path)
    try:
        # Only a file of the very size is read (so the read is bounded): an unchanged value keeps its file and mtime,
        # and `gcbulk plan` does not read it again.
        if final.stat().st_size == len(text) and final.read_bytes() == text:
            return False
    except FileNotFoundError:
        pass
    make_private_dirs(final.parent, root=out_dir)
    # Not fsynced (5–6 ms each, thousands of values): every export compares each file with the server's value and
    # rewrites it if a power cut lost it, so the write need only be atomic.
    with replacing(final, "wb", durable=False) as handle:
        handle.write(text)
    return True


def _stale_files(out_dir: Path, items: list[ExportedItem]) -> list[str]:
    """Files under the items' case folders that none of their values holds (a killed write's hidden temporary too:
    the planner would report it)."""
    stale = []
    for item in items:
        folder = out_dir / CASES_DIR / item.folder
        wanted = {path for paths in item.files.values() for path in paths}
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(out_dir).as_posix()
            if path.is_file() and relative not in wanted:
                stale.append(relative)
    return stale


def _written_files(ledger: ResultsLedger, item: _ListedItem) -> dict[str, tuple[str, ...]]:
    """socket → the item's files that are present and verified (a failed download is left out)."""
    files: dict[str, tuple[str, ...]] = {socket: (path,) for socket, path in item.values.items()}
    for download in item.downloads:
        verified = tuple(
            row.path
            for row in ledger.masks_of_answer(download.key)
            if row.state == "verified" and row.image_pk == download.source
        )
        if verified:
            files[download.socket] = verified
    return files

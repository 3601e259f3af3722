"""The Python API of archives, beside ``ReaderStudy`` (``engine/api.py``) and as notebook-safe::

    archive = gcbulk.Archive("my-archive")   # token from $GRAND_CHALLENGE_AUTHORIZATION, as gcapi
    exported = archive.export("cases-out/")  # a case tree, titles.csv and job.toml; resumable
    exported.items                           # [ExportedItem(pk, title, folder, files={socket: (paths…)}), …]
    gcbulk.Job(exported.job_file)            # plans the tree back to the same sockets (name the target first)

The calls are synchronous and work inside a running event loop (a Jupyter cell), as every call of ``engine/api.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from gcbulk.engine import settings
from gcbulk.engine.api import FIRST_CONTACT_ATTEMPTS, _client, _run_sync
from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.gc.retry import RetryBudget, item_budget
from gcbulk.engine.results.archive_export import ArchiveExportOptions, export_archive
from gcbulk.engine.results.archive_summary import ArchiveExportSummary, ExportedItem
from gcbulk.engine.results.masks import DownloadLimits

__all__ = ["Archive", "ArchiveExportSummary", "ExportedItem", "export_archive_folder"]


async def export_archive_folder(
    server: settings.ServerSettings,
    archive: str,
    out_dir: Path,
    *,
    downloads: int = 8,
    limits: DownloadLimits | None = None,
    on_progress: Callable[[ArchiveExportSummary], None] | None = None,
) -> ArchiveExportSummary:
    """``gcbulk export --archive``: the archive's items as a case tree in ``out_dir``, with the job file that plans
    it back; returns what was written. ``on_progress`` gets the growing summary every 10 s. Raises ConfigurationError for an archive this user may not view, a bad token
    or a folder that holds another export."""
    if downloads < 1:
        raise ConfigurationError("downloads (--mask-downloads) must be at least 1")
    if not archive.strip():
        raise ConfigurationError("no archive: pass the archive's slug (the last part of its URL)")
    options = ArchiveExportOptions(
        archive=archive.strip(),
        out_dir=Path(out_dir).absolute(),
        downloads=downloads,
        download_limits=limits or DownloadLimits(),
        ca_file=server.ca_file,
    )
    async with _client(server) as client:
        # The first request gets as many tries as `plan`'s checks: an unreachable server is named within seconds.
        with item_budget(RetryBudget(FIRST_CONTACT_ATTEMPTS, f"reaching {client.base_url}")):
            await client.archive_by_slug(options.archive)
        return await export_archive(client, options, on_progress=on_progress)


class Archive:
    """An archive on Grand Challenge, named by its slug. ``token`` defaults to ``$GRAND_CHALLENGE_AUTHORIZATION``
    (or ``$GCBULK_TOKEN_FILE``), ``base_url`` to ``$GCBULK_BASE_URL`` and else the public Grand Challenge."""

    def __init__(
        self,
        slug: str,
        *,
        base_url: str | None = None,
        token: str | None = None,
        ca_file: Path | str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        server = settings.resolve_server(
            base_url=base_url,
            ca_file=None if ca_file is None else Path(ca_file),
            environ=environ,
            read_token=token is None,
        )
        if token is not None:
            server = dataclasses.replace(server, token=token)
        if not slug or not slug.strip():
            raise ConfigurationError("gcbulk.Archive needs the archive's slug (the last part of its URL)")
        self.server = server
        self.slug = slug.strip()

    def __repr__(self) -> str:
        return f"Archive({self.slug!r}, base_url={self.server.base_url!r})"

    def export(self, out_dir: Path | str, *, downloads: int = 8) -> ArchiveExportSummary:
        """Every item's values into ``out_dir`` as ``gcbulk export --archive`` writes them (``cases/<item>/``,
        ``titles.csv``, ``job.toml``); resumable. Returns the summary: ``.items``, ``.job_file``, ``.failures``,
        ``.lines()``."""
        return _run_sync(lambda: export_archive_folder(self.server, self.slug, Path(out_dir), downloads=downloads))

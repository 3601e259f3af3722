"""What an archive export wrote (``engine/results/archive_export.py``): the summary the CLI prints and the Python API
returns, one ``ExportedItem`` per archive item, and the line a long export says every few seconds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcbulk.engine.results.case_tree_job import CASES_DIR, JOB_FILE, TITLES_CSV
from gcbulk.engine.results.masks import MaskStats


@dataclass(frozen=True, kw_only=True)
class ExportedItem:
    """One archive item as written: its case folder and, per socket, its files (relative to the export folder)."""

    pk: str
    title: str  # the item's title on the server; "" for an untitled item
    folder: str  # under cases/
    files: Mapping[str, tuple[str, ...]]


@dataclass
class ArchiveExportSummary:
    """What an archive export wrote: ``items`` (one ``ExportedItem`` each), ``job_file`` for ``gcbulk plan``."""

    archive: str
    out_dir: Path
    job_file: Path | None = None
    items: list[ExportedItem] = field(default_factory=list)
    phase: str = "listing"  # then "downloading", "writing"
    items_listed: int = 0  # grows while the listing runs; ``items`` is filled at the end
    files_wanted: int = 0  # images (each one or more files) and file values to make present
    values_written: int = 0
    values_unchanged: int = 0
    missing: list[str] = field(default_factory=list)  # values with nothing to download yet
    # Case folders an earlier run wrote for items since renamed or gone: left in place (an export deletes nothing),
    # but titles.csv has no row for them, so `gcbulk plan` blocks them until they are moved away.
    stale_folders: list[str] = field(default_factory=list)
    # Files in the current items' folders that no value of theirs holds now (a value removed, an image replaced by one
    # of another form): left in place too, and named, since `gcbulk plan` would send those its rules take.
    stale_files: list[str] = field(default_factory=list)
    files: MaskStats = field(default_factory=MaskStats)

    @property
    def case_root(self) -> Path:
        return self.out_dir / CASES_DIR

    @property
    def failures(self) -> list[str]:
        return [*self.missing, *self.files.failures]

    def counts(self) -> dict[str, Any]:
        return {
            "items": len(self.items),
            "values_written": self.values_written,
            "values_unchanged": self.values_unchanged,
            "values_missing": len(self.missing),
            "files_downloaded": self.files.downloaded,
            "files_skipped": self.files.skipped,
            "files_failed": self.files.failed,
            "files_resumed": self.files.resumed,
            "file_bytes": self.files.bytes,
            "stale_folders": len(self.stale_folders),
            "stale_files": len(self.stale_files),
        }

    def progress_line(self) -> str:
        """What the export is doing now, for a long export's voice."""
        f = self.files
        if self.phase == "listing":
            return f"listing the archive's items: {self.items_listed} so far"
        if self.phase == "downloading":
            return (
                f"downloading the images and files of {self.files_wanted} values ({self.items_listed} items): "
                f"{f.downloaded} files downloaded, {f.skipped} already present, {f.failed} failed, "
                f"{f.bytes / 2**20:.1f} MiB so far"
            )
        return f"writing {TITLES_CSV} and {JOB_FILE}"

    def lines(self) -> list[str]:
        f = self.files
        return [
            f"archive {self.archive!r} → {self.out_dir}",
            f"  items: {len(self.items)} (one case folder each under {CASES_DIR}/)",
            f"  JSON values: {self.values_written} written, {self.values_unchanged} unchanged",
            f"  images and files: {f.downloaded} downloaded ({f.resumed} resumed), {f.skipped} already present, "
            f"{f.failed} failed",
            f"  job file: {self.job_file} (gcbulk plan reads the tree back; name the target reader study in it)",
            *(f"  failed: {failure}" for failure in self.failures),
            *(
                [
                    f"  left in place: {len(self.stale_folders)} case folder(s) of items renamed or no longer in the "
                    f"archive; move them out of {CASES_DIR}/ before gcbulk plan: "
                    + ", ".join(repr(name) for name in self.stale_folders[:10])
                    + (", …" if len(self.stale_folders) > 10 else "")
                ]
                if self.stale_folders
                else []
            ),
            *(
                [
                    f"  left in place: {len(self.stale_files)} file(s) no value of their item holds now; gcbulk plan "
                    "would send those its rules take: "
                    + ", ".join(repr(name) for name in self.stale_files[:10])
                    + (", …" if len(self.stale_files) > 10 else "")
                ]
                if self.stale_files
                else []
            ),
        ]

"""Frozen snapshots the ledger hands out: what a case, item, file, upload and part look like right now.

They are read models: changing one changes nothing; every change goes through a ``Ledger`` transition.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, kw_only=True)
class JobBinding:
    """What a ledger belongs to: opening it for another reader study, server or case root is refused."""

    reader_study: str
    base_url: str
    case_root: str  # absolute


@dataclass(frozen=True, kw_only=True)
class PartRow:
    upload_id: int
    number: int
    state: str
    size: int
    etag: str
    md5: str | None


@dataclass(frozen=True, kw_only=True)
class UploadRow:
    id: int
    file_id: int
    state: str
    filename: str
    pk: str | None
    s3_upload_id: str | None
    file_size: int
    part_size: int
    part_count: int
    intent_at: str | None
    created_at: str | None
    completed_at: str | None
    attempts: int
    last_error: str | None
    # Parts whose ETag is recorded and still believed good (state 'sent'), by part number.
    parts: dict[int, PartRow] = field(default_factory=dict)

    @property
    def missing_part_numbers(self) -> list[int]:
        return [n for n in range(1, self.part_count + 1) if n not in self.parts]


@dataclass(frozen=True, kw_only=True)
class FileWork:
    id: int
    item_id: int
    relative_path: str
    path: Path  # absolute: the job's case root joined with relative_path
    name: str
    size: int
    mtime_ns: int
    checksum: str | None
    # The newest upload that still exists on Grand Challenge (creating / initialized / completed), if any.
    upload: UploadRow | None
    # The part size ``checksum`` was computed at (an S3-style multipart checksum), or None when ``checksum`` is not one
    # (a staged DICOM copy's SHA-256).
    checksum_part_size: int | None = None


@dataclass(frozen=True, kw_only=True)
class ItemWork:
    id: int
    case_id: int
    socket_slug: str
    super_kind: str | None
    value_json: str | None
    state: str
    attempts: int
    last_error: str | None
    files: tuple[FileWork, ...]
    # The upload session this item's import runs in (image sockets; None before it is created, or on a server that
    # refused sessions and got the uploads named in the PATCH instead).
    upload_session_pk: str | None = None

    @property
    def has_value(self) -> bool:
        return self.value_json is not None

    @property
    def value(self) -> Any:
        return None if self.value_json is None else json.loads(self.value_json)


@dataclass(frozen=True, kw_only=True)
class DisplaySetRow:
    case_id: int
    state: str
    pk: str | None
    attempts: int
    last_error: str | None
    create_order: int | None = None  # the ``order`` its create sends (fixed in plan order before the first create)


@dataclass(frozen=True, kw_only=True)
class CaseWork:
    """One case with everything the transfer engine needs to continue it from wherever it stopped."""

    id: int
    title: str
    folder: str
    state: str
    attempts: int
    last_error: str | None
    display_set: DisplaySetRow
    items: tuple[ItemWork, ...]  # withdrawn items are left out


@dataclass(frozen=True, kw_only=True)
class AttentionRow:
    """A case a person has to look at: failed, blocked by findings, or vanished from the tree."""

    case_id: int
    title: str
    folder: str
    state: str
    last_error: str | None
    findings: list[dict[str, Any]]


@dataclass(kw_only=True)
class PlanDiff:
    """What recording a plan changed in the ledger (or would change, for a dry run)."""

    cases: int = 0
    files: int = 0
    bytes: int = 0
    new_cases: int = 0
    # Files (and their bytes) in items Grand Challenge has not consumed yet: at most this many uploads are needed.
    files_to_upload: int = 0
    bytes_to_upload: int = 0
    largest_file: int = 0
    requeued: list[str] = field(default_factory=list)
    # (title, socket, what changed): a file changed after Grand Challenge consumed it; nothing is re-sent.
    changed_after_consumed: list[tuple[str, str, str]] = field(default_factory=list)
    unchanged: Counter[str] = field(default_factory=Counter)  # by case state
    removed: list[tuple[str, str]] = field(default_factory=list)  # (title, state) of cases whose folder vanished
    blocked: list[str] = field(default_factory=list)
    duplicate_titles: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "files": self.files,
            "bytes": self.bytes,
            "new_cases": self.new_cases,
            "files_to_upload": self.files_to_upload,
            "bytes_to_upload": self.bytes_to_upload,
            "largest_file": self.largest_file,
            "requeued": list(self.requeued),
            "changed_after_consumed": [
                {"title": title, "socket": socket, "change": change}
                for title, socket, change in self.changed_after_consumed
            ],
            "unchanged": dict(sorted(self.unchanged.items())),
            "removed": [{"title": title, "state": state} for title, state in self.removed],
            "blocked": list(self.blocked),
            "duplicate_titles": list(self.duplicate_titles),
        }


@dataclass(frozen=True, kw_only=True)
class ImportInFlight:
    """A value the server has (its uploads attached) whose import has not been seen to finish yet."""

    case_id: int
    title: str
    socket_slug: str
    attached_at: str  # ISO-8601 UTC, when the ledger recorded it attached
    bytes: int  # the value's files, what its expected import time is reckoned from


# ---- What the ledger reads of a planned case (``gcbulk.engine.plan.cases``: the planner's records match these
# shapes). Declared here because the ledger may not import the planner, nor the planner the ledger.
class PlannedFileShape(Protocol):
    @property
    def path(self) -> str: ...  # relative to the case root, '/'-separated
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...


class PlannedItemShape(Protocol):
    @property
    def socket_slug(self) -> str: ...
    @property
    def files(self) -> Sequence[PlannedFileShape]: ...
    @property
    def value_json(self) -> str | None: ...
    @property
    def super_kind(self) -> str | None: ...


class FindingShape(Protocol):
    @property
    def blocking(self) -> bool: ...
    def as_dict(self) -> dict[str, Any]: ...


class PlannedCaseShape(Protocol):
    @property
    def title(self) -> str: ...
    @property
    def folder(self) -> str: ...
    @property
    def items(self) -> Sequence[PlannedItemShape]: ...
    @property
    def findings(self) -> Sequence[FindingShape]: ...

"""The planner's own reads of a case's files — MetaImage headers (``.mha``/``.mhd``, 64 KiB at most) and JSON value
files — remembered between plans, so a re-plan of an unchanged tree reads no file (issue 31).

Each outcome is kept in a ``FileReadCache`` under the file's path, size, mtime and inode (``FileStamp``, as the walk's
``lstat``/``stat`` saw them; the same test as the content checks' ``ContentKey``): when any of them changes, the file
is read again. What is kept is the outcome of the read alone — a parsed header, a canonical JSON value, or why there
is none — never a finding: a finding names its case, whose title can change while the file does not, so findings are
made anew from the outcome on every plan.

Pure: reads only the file it is given, within the same budgets as an uncached read; no network, no database. The
service passes a cache that persists in the ledger (``gcbulk.engine.service.content_cache``); without one every
plan reads every file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, Protocol

from gcbulk.engine.plan.metaimage import (
    BadHeader,
    HeaderOverBudget,
    MetaHeader,
    NotMetaImage,
    ReadBudget,
    capacity_problem,
    read_header,
)
from gcbulk.engine.plan.values import canonical_json

# What kind of read an outcome is of (the kinds keep apart what one file could be read as). A change to what a read
# concludes — a new header check — takes a new name ("mha-verdict-2"): rows of the old one are never looked up again,
# and the next plan that walks the whole tree forgets them.
ReadKind = Literal["metaimage-header", "mha-verdict", "json-value"]

MAX_VALUE_FILE = 16 * 1024**2  # docs/gc-api.md §5: a request body is at most 16 MiB
# Values larger than this are read again on every plan rather than kept: the cache's rows, and the results held in
# memory until they are written, stay small whatever the values are.
MAX_CACHED_VALUE = 64 * 1024


@dataclass(frozen=True, slots=True)
class FileStamp:
    """A file as the walk saw it: when any of these changes, what was read from it is read again."""

    path: str  # absolute: the case root joined with the file's path
    size: int
    mtime_ns: int
    inode: int


class FileReadCache(Protocol):
    """Where read outcomes are kept: ``get`` gives the outcome (JSON text) read from exactly this stamp, or None;
    ``put`` keeps one, replacing what the same path and kind had."""

    def get(self, stamp: FileStamp, kind: ReadKind) -> str | None: ...

    def put(self, stamp: FileStamp, kind: ReadKind, outcome: str) -> None: ...


@dataclass(frozen=True, slots=True)
class MhaProblem:
    """What is wrong with an ``.mha``'s header whatever case it is in: ``bad-header`` (``detail`` says why) or
    ``data-elsewhere`` (its voxels are in the file ``detail`` names, which would not be sent)."""

    kind: Literal["bad-header", "data-elsewhere"]
    detail: str


def _judge_mha(path: str, size: int, budget: ReadBudget) -> MhaProblem | None:
    try:
        header = read_header(path, budget)
    except HeaderOverBudget as exc:
        return MhaProblem("bad-header", str(exc))
    except NotMetaImage:
        return None  # no MetaImage header at all: SimpleITK's own read (engine/plan/content.py) says what is wrong
    except BadHeader as exc:
        return MhaProblem("bad-header", str(exc))
    if not header.local:
        return MhaProblem("data-elsewhere", header.data_file)
    problem = capacity_problem(header, size - header.header_length, "the file")
    return None if problem is None else MhaProblem("bad-header", problem)


class ValueFileError(ValueError):
    """A JSON value file that cannot be a value: the message says why (over the request limit, not JSON)."""


_HEADER_ERRORS: dict[str, type[Exception]] = {
    "not-metaimage": NotMetaImage,
    "over-budget": HeaderOverBudget,
    "bad-header": BadHeader,
}


def _header_outcome(result: MetaHeader | Exception) -> str | None:
    """The outcome to keep, or None for an error this module cannot give back as itself (not kept)."""
    if isinstance(result, MetaHeader):
        fields = {name: getattr(result, name) for name in MetaHeader.__slots__}
        return json.dumps({"header": fields})
    for name, kind in _HEADER_ERRORS.items():
        if type(result) is kind:  # exactly: HeaderOverBudget is a NotMetaImage, and must come back as itself
            return json.dumps({"error": name, "message": str(result)})
    return None


def _header_from(outcome: str) -> MetaHeader:
    data = json.loads(outcome)
    if "error" in data:
        raise _HEADER_ERRORS[data["error"]](data["message"])
    fields = data["header"]
    tuples = {
        name: None if value is None else tuple(value) for name, value in fields.items() if isinstance(value, list)
    }
    return MetaHeader(**{**fields, **tuples})


class PlannerReads:
    """The planner's reads of one file, through ``cache`` when there is one. Each read keeps its budget; a read that
    fails with an OSError (a permission, a file gone) is not kept, so the next plan tries again."""

    def __init__(self, budget: ReadBudget, cache: FileReadCache | None = None) -> None:
        self.budget = budget
        self.cache = cache
        self.files_read = 0  # reads made (new files, or changed since the cache's outcome)
        self.files_cached = 0  # outcomes the cache had: the file was not read

    def header(self, stamp: FileStamp) -> MetaHeader:
        """The MetaImage header at ``stamp.path`` (``metaimage.read_header``): raises NotMetaImage (HeaderOverBudget),
        BadHeader or OSError as that does, from the cache when the file did not change."""
        kept = None if self.cache is None else self.cache.get(stamp, "metaimage-header")
        if kept is not None:
            self.files_cached += 1
            return _header_from(kept)
        self.files_read += 1
        try:
            header = read_header(stamp.path, self.budget)
        except (NotMetaImage, BadHeader) as exc:
            self._keep(stamp, "metaimage-header", _header_outcome(exc))
            raise
        self._keep(stamp, "metaimage-header", _header_outcome(header))
        return header

    def mha_problem(self, stamp: FileStamp) -> MhaProblem | None:
        """What is wrong with the ``.mha`` header at ``stamp.path`` (read within the header budget, checked against
        the file's size), or None; raises OSError. The verdict alone is kept — an empty outcome for a sound file, the
        common case — so a re-plan's lookup costs no parsing."""
        kept = None if self.cache is None else self.cache.get(stamp, "mha-verdict")
        if kept is not None:
            self.files_cached += 1
            if not kept:
                return None
            data = json.loads(kept)
            return MhaProblem(data["kind"], data["detail"])
        self.files_read += 1
        problem = _judge_mha(stamp.path, stamp.size, self.budget)
        outcome = "" if problem is None else json.dumps({"kind": problem.kind, "detail": problem.detail})
        self._keep(stamp, "mha-verdict", outcome)
        return problem

    def value(self, stamp: FileStamp) -> str:
        """The JSON value in the file at ``stamp.path``, as canonical JSON; raises ValueFileError (over 16 MiB, not
        JSON, not UTF-8) or OSError. Reads at most 16 MiB and a byte, whatever the file has grown to since the walk."""
        kept = None if self.cache is None else self.cache.get(stamp, "json-value")
        if kept is not None:
            self.files_cached += 1
            data = json.loads(kept)
            if "error" in data:
                raise ValueFileError(data["error"])
            return str(data["value"])
        self.files_read += 1
        try:
            if stamp.size > MAX_VALUE_FILE:
                raise ValueFileError("it is over 16 MiB, the server's request limit")
            with open(stamp.path, "rb") as handle:
                content = handle.read(MAX_VALUE_FILE + 1)
            if len(content) > MAX_VALUE_FILE:
                raise ValueFileError("it is over 16 MiB, the server's request limit")
            try:
                value = canonical_json(json.loads(content))
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                raise ValueFileError(str(exc)) from None
        except ValueFileError as exc:
            self._keep(stamp, "json-value", json.dumps({"error": str(exc)}))
            raise
        if len(value) <= MAX_CACHED_VALUE:
            self._keep(stamp, "json-value", json.dumps({"value": value}))
        return value

    def _keep(self, stamp: FileStamp, kind: ReadKind, outcome: str | None) -> None:
        if self.cache is not None and outcome is not None:
            self.cache.put(stamp, kind, outcome)

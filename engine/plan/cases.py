"""What the planner produces: planned cases, their socket values (items) and files.

``gcbulk.state.replan`` records these by duck typing (``state`` does not import ``engine``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gcbulk.engine.plan.findings import Finding


@dataclass(frozen=True, slots=True)
class PlannedFile:
    path: str  # relative to the case root, '/'-separated
    name: str  # the upload's filename
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class PlannedItem:
    """One socket value of a case: files for an Image/File socket, or a JSON value."""

    socket_slug: str
    files: tuple[PlannedFile, ...] = ()
    value_json: str | None = None
    value_path: str | None = None  # the file a JSON value was read from, if any
    super_kind: str | None = None  # from the socket catalogue; None when planned offline
    rule: int | None = None  # the job's rules[N] that took the files; None for a [values] entry

    def with_super_kind(self, super_kind: str) -> PlannedItem:
        """This item with the socket's kind from the catalogue. Built field by field rather than with
        ``dataclasses.replace``: it runs for every item of every plan, and replace's generic field walk cost ~5 % of a
        re-plan (keep it in step with the fields above)."""
        return PlannedItem(
            socket_slug=self.socket_slug,
            files=self.files,
            value_json=self.value_json,
            value_path=self.value_path,
            super_kind=super_kind,
            rule=self.rule,
        )

    @property
    def shape(self) -> str:
        """How this value looks, the same across cases when the rules work: what ``plan`` groups its mapping by."""
        if not self.files:
            return self.value_path.rpartition("/")[2] if self.value_path else "[values] entry"
        if len(self.files) <= 2:
            return " + ".join(f.name for f in self.files)
        suffixes = sorted({os.path.splitext(f.name)[1] or f.name for f in self.files})
        return "series of " + ", ".join(f"*{s}" for s in suffixes[:3]) + (" …" if len(suffixes) > 3 else "")


@dataclass(frozen=True, slots=True)
class PlannedCase:
    title: str
    folder: str  # relative to the case root
    items: tuple[PlannedItem, ...]
    findings: tuple[Finding, ...] = ()

    @property
    def blocking(self) -> bool:
        return any(each.blocking for each in self.findings)


@dataclass(frozen=True, slots=True)
class Entry:
    """A file of a case folder as the walk found it."""

    rel: str  # relative to the case root
    inner: str  # relative to the case folder
    name: str
    path: str  # absolute
    size: int
    mtime_ns: int
    link: bool = False  # a symbolic link (one no rule uses is ignored without a word)
    # Where a symbolic link leads when that is outside the case folder (resolved real path), else None: such a file is
    # never sent for the case (a blocking finding when a rule takes it).
    outside: str | None = None
    inode: int = 0  # with size and mtime, what says the file did not change since the planner last read it

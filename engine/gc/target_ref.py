"""Where a job's cases go: a reader study's display sets or an archive's items (docs/gc-api.md §3, §12).

A ``TargetRef`` is the name only (no network): the job file, the settings and the ledger's binding carry it. The
seam that speaks to the server for it is ``engine/gc/targets.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TargetKind = Literal["reader-study", "archive"]
READER_STUDY: TargetKind = "reader-study"
ARCHIVE: TargetKind = "archive"
KINDS: tuple[TargetKind, ...] = (READER_STUDY, ARCHIVE)
# The ledger's job row names its target in the column ``reader_study`` (ledgers on disk predate archives): a reader
# study by its bare slug, as always, an archive as ``archive:<slug>``. A slug never holds ':' (the server's slugs are
# letters, digits and '-'), so the two cannot be confused, and an old ledger reads as a reader study with no migration.
_ARCHIVE_PREFIX = "archive:"


class TargetRefError(ValueError):
    """A target written in a way gcbulk cannot read; the message says what to write instead."""


@dataclass(frozen=True)
class TargetRef:
    kind: TargetKind
    slug: str

    @property
    def is_archive(self) -> bool:
        return self.kind == ARCHIVE

    @property
    def label(self) -> str:
        """``reader study 'x'`` / ``archive 'x'``: how messages name it."""
        return f"{'archive' if self.is_archive else 'reader study'} {self.slug!r}"

    @property
    def container_noun(self) -> str:
        """What one case becomes there."""
        return "archive item" if self.is_archive else "display set"

    @property
    def a_container(self) -> str:
        """``a display set`` / ``an archive item``: for sentences."""
        return "an archive item" if self.is_archive else "a display set"

    @property
    def ledger_key(self) -> str:
        """The value of the ledger's ``job.reader_study`` column for this target (see ``_ARCHIVE_PREFIX``)."""
        return f"{_ARCHIVE_PREFIX}{self.slug}" if self.is_archive else self.slug

    @property
    def spec(self) -> str:
        """``reader-study:x`` / ``archive:x``: as ``gcbulk copy --from/--to`` takes it."""
        return f"{self.kind}:{self.slug}"

    @classmethod
    def from_ledger_key(cls, key: str) -> TargetRef:
        if key.startswith(_ARCHIVE_PREFIX):
            return cls(ARCHIVE, key[len(_ARCHIVE_PREFIX) :])
        return cls(READER_STUDY, key)

    @classmethod
    def parse_spec(cls, spec: str) -> TargetRef:
        """``archive:SLUG`` or ``reader-study:SLUG``; raises TargetRefError naming what was given."""
        kind, sep, slug = spec.strip().partition(":")
        if not sep or kind not in KINDS or not slug.strip() or ":" in slug:
            raise TargetRefError(
                f"{spec!r} is not a target: write archive:SLUG or reader-study:SLUG (the slug is the last part of "
                "the archive's or the study's URL)"
            )
        return cls(ARCHIVE if kind == ARCHIVE else READER_STUDY, slug.strip())

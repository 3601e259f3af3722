"""Preflight: the checks that need more than one file: the socket catalogue, the whole plan (duplicate titles, the
quota estimate) or the engine's part size. The wording of every finding lives in ``gcbulk.engine.plan.findings``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableSet, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from gcbulk.engine.gc.limits import (  # noqa: F401 - plan.py imports some from here
    MAX_FILENAME,
    MAX_FILES_PER_IMAGE,
    MAX_TITLE,
    UNVERIFIED_QUOTA,
    UPLOAD_CAP,
    VERIFIED_QUOTA,
    GiB,
)
from gcbulk.engine.jobfile import JobConfig
from gcbulk.engine.plan.content import ContentCache, ContentChecker
from gcbulk.engine.plan.findings import (
    Finding,
    _f,
    duplicate_title,
    file_socket_many_files,
    title_taken,
    too_many_parts,
    unknown_socket,
    wrong_socket_kind,
)
from gcbulk.engine.plan.parts import (
    MAX_OBJECT_SIZE,
    MAX_PARTS,
    FileTooLarge,
    adjust_part_size,
    part_count,
)
from gcbulk.engine.plan.planner import PlannedCase
from gcbulk.engine.plan.titles import server_title

# Cases whose content checks are read ahead at once (``Preflight.reading_ahead``): enough files to keep every reader
# thread busy, few enough that the results held wait for their case only briefly.
READ_AHEAD_CASES = 64

# Work started for a window of cases before they are checked and recorded, beside the content checks' reads (the plan's
# checksums, engine/service/plan_checksums.py): given the window's cases, it starts, and returns what drops the results
# their cases did not take, called once those cases are recorded.
StartAhead = Callable[[Sequence[PlannedCase]], Callable[[], None]]


@dataclass(kw_only=True)
class QuotaEstimate:
    """The plan against the server's limits (docs/gc-api.md §1)."""

    total_bytes: int = 0
    uploads: int = 0
    largest_file: int = 0
    largest_value_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_bytes": self.total_bytes,
            "uploads": self.uploads,
            "largest_file": self.largest_file,
            "largest_value_bytes": self.largest_value_bytes,
            "verified_quota_bytes": VERIFIED_QUOTA,
            "unverified_quota_bytes": UNVERIFIED_QUOTA,
            "upload_cap": UPLOAD_CAP,
        }


def quota_findings(estimate: QuotaEstimate, case_root: object, ceiling: int) -> list[Finding]:
    """The plan-wide quota notes. A value too large for the quota is a finding of its own case (``value_quota``)."""
    findings = []
    if estimate.total_bytes > UNVERIFIED_QUOTA:
        findings.append(
            _f(
                "quota",
                "info",
                case_root,
                f"{estimate.total_bytes} bytes in all, more than the upload quota (128 GiB verified, "
                "2 GiB unverified); the engine paces uploads so Grand Challenge consumes them as it goes",
                "nothing to do",
            )
        )
    if estimate.uploads > UPLOAD_CAP:
        findings.append(
            _f(
                "quota",
                "info",
                case_root,
                f"{estimate.uploads} uploads, more than the server's cap of {UPLOAD_CAP} live uploads; the "
                f"engine keeps at most {ceiling} alive at once",
                "nothing to do; lower engine.live_upload_ceiling if other tools upload with this account",
            )
        )
    return findings


def value_quota(case_path: object, case: str, socket: str, files: tuple[str, ...], size: int) -> Finding | None:
    """docs/gc-api.md §1: the byte quota is checked at presign time against everything the account holds at once, and a
    value's files must all be uploaded before the display set takes them; so one value over the quota cannot go."""
    if size > VERIFIED_QUOTA:
        return _f(
            "quota",
            "blocking",
            case_path,
            f"the value for socket {socket!r} needs {size} bytes of uploads at once ({', '.join(files)}), over "
            "the 128 GiB upload quota of a verified account",
            "split that case's data or convert it to a smaller format (e.g. a compressed .mha)",
            files,
            case,
        )
    if size > UNVERIFIED_QUOTA:
        return _f(
            "quota",
            "warning",
            case_path,
            f"the value for socket {socket!r} needs {size} bytes of uploads at once ({', '.join(files)}); an "
            "unverified account may hold only 2 GiB",
            "make sure the account is verified on Grand Challenge",
            files,
            case,
        )
    return None


class TitleSet(Protocol):
    def __contains__(self, title: object) -> bool: ...
    def add(self, title: str) -> None: ...


@dataclass
class Preflight:
    """The checks that need more than one file: the catalogue, duplicate titles, part counts and the quota.

    ``catalogue`` maps each socket slug of the job to the socket (a dict with ``super_kind``) or None when it does
    not exist; None as a whole means offline (socket checks skipped). ``titles`` is any set-like container, e.g. the
    ledger's ``plan.titles`` so memory stays flat on huge trees.
    """

    config: JobConfig
    catalogue: Mapping[str, Mapping[str, Any] | None] | None = None
    titles: TitleSet | MutableSet[str] = field(default_factory=set)
    quota: QuotaEstimate = field(default_factory=QuotaEstimate)
    # The server's own checks of file content (masks, JSON schemas, image headers), made here when the catalogue is
    # known; the cache (path, size, mtime, inode → findings) can outlive one plan: the service keeps it in the ledger.
    check_content: bool = True
    content_cache: ContentCache | None = None
    # Titles of display sets in the study that this job did not make (docs/gc-api.md §10: adopting them replaced other
    # people's images): a case with one of these titles is blocked.
    foreign_titles: Mapping[str, str] = field(default_factory=dict)  # title → the pk of the display set holding it
    _content: ContentChecker | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        # Keyed as the server compares titles, so a case's title finds the display set holding it.
        self.foreign_titles = {server_title(title): pk for title, pk in self.foreign_titles.items()}
        if self.catalogue is not None and self.check_content:
            self._content = ContentChecker(self.catalogue, self.content_cache)

    def check_job(self) -> list[Finding]:
        """Static checks of the job's sockets against the catalogue (one finding per rule, not per case)."""
        if self.catalogue is None:
            return []
        findings = []
        job_file = self.config.job_file
        uses: list[tuple[str, str, str]] = [
            (rule.label, rule.socket, "a JSON value" if rule.value else "files") for rule in self.config.rules
        ]
        uses += [(f"values.{slug}", slug, "a JSON value") for slug in self.config.values]
        for where, slug, given in uses:
            socket = self.catalogue.get(slug)
            if socket is None:
                findings.append(unknown_socket(job_file, where, slug, self.config.base_url))
                continue
            super_kind = socket.get("super_kind")
            if given == "files" and super_kind == "Value":
                findings.append(wrong_socket_kind(job_file, where, slug, super_kind, given))
            elif given == "a JSON value" and super_kind == "Image":
                findings.append(wrong_socket_kind(job_file, where, slug, super_kind, given))
        for rule in self.config.rules:
            socket = self.catalogue.get(rule.socket)
            if (
                socket
                and socket.get("kind") == "DICOM Image Set"
                and rule.dicom is None
                and rule.group != "dicom-series"
            ):
                # Files that are not one DICOM series would be refused after the upload, silently (docs/gc-api.md §10).
                findings.append(
                    _f(
                        "dicom-image-set-rule",
                        "blocking",
                        job_file,
                        f"{rule.label}: socket {rule.socket!r} is a DICOM Image Set, which takes one DICOM "
                        "series per case",
                        'map it with dicom = { Modality = … } (or group = "dicom-series")',
                    )
                )
        return findings

    def _super_kind(self, slug: str) -> str | None:
        if self.catalogue is None:
            return None
        socket = self.catalogue.get(slug)
        return None if socket is None else socket.get("super_kind")

    def check_case(self, case: PlannedCase) -> PlannedCase:
        """Add this case's plan-wide findings and socket kinds; count it in the quota estimate."""
        findings = list(case.findings)
        case_path = self.config.case_root / case.folder
        # Compared as the server compares them (issue 24; unique per study, docs/gc-api.md §3): "dup" and "dup ", or NFC
        # and NFD "café", collide.
        key = server_title(case.title)
        if key in self.titles:
            findings.append(duplicate_title(case_path, case.title))
        else:
            self.titles.add(key)
        if key in self.foreign_titles:
            findings.append(title_taken(case_path, case.title, self.foreign_titles[key]))
        items = []
        preferred = self.config.engine.part_size
        for item in case.items:
            super_kind = self._super_kind(item.socket_slug)
            if super_kind == "File" and len(item.files) > 1:
                findings.append(file_socket_many_files(case_path, item.socket_slug, len(item.files), case.title))
            value_bytes = 0
            for file in item.files:
                self.quota.uploads += 1
                self.quota.total_bytes += file.size
                self.quota.largest_file = max(self.quota.largest_file, file.size)
                value_bytes += file.size
                if part_count(file.size, preferred) > MAX_PARTS or file.size > MAX_OBJECT_SIZE:
                    try:
                        grown: int | None = adjust_part_size(preferred, file.size)
                    except FileTooLarge:
                        grown = None
                    findings.append(too_many_parts(self.config.case_root / file.path, file.size, preferred, grown))
            self.quota.largest_value_bytes = max(self.quota.largest_value_bytes, value_bytes)
            if self._content is not None:
                findings.extend(self._content.check(item, str(self.config.case_root), str(case_path), case.title))
            over = value_quota(case_path, case.title, item.socket_slug, tuple(f.path for f in item.files), value_bytes)
            if over is not None:
                findings.append(over)
            items.append(item if super_kind is None else item.with_super_kind(super_kind))
        if self._content is not None:
            findings.extend(self._content.check_grids(case.items, str(self.config.case_root), case.title))
        if len(findings) == len(case.findings) and all(new is old for new, old in zip(items, case.items, strict=True)):
            return case  # the common case, kept cheap: nothing to add
        return dataclasses.replace(case, items=tuple(items), findings=tuple(findings))

    def reading_ahead(
        self,
        entries: Iterable[PlannedCase | Finding],
        readers: Executor | None,
        window: int = READ_AHEAD_CASES,
        *,
        also: Sequence[StartAhead] = (),
    ) -> Iterator[PlannedCase | Finding]:
        """``entries`` (the planner's output) unchanged, with the content checks of each ``window`` of cases read
        ahead on ``readers``' threads (``ContentChecker.read_ahead``), and what ``also`` starts for the same window:
        the work of one window runs while the cases of the window before it are checked and recorded, so the readers
        and this thread work at once. At most two windows are held. What a window's cases did not take is dropped when
        the entry after them is asked for, as by then they are recorded: so nothing else may read ahead between this
        and the recorder (it would ask for that entry before they are)."""
        starts = list(also)
        if self._content is not None and readers is not None:
            starts.insert(0, self._content_read_ahead(readers))
        if not starts:
            yield from entries
            return
        earlier: tuple[list[PlannedCase | Finding], list[Callable[[], None]]] | None = None
        pending: list[PlannedCase | Finding] = []
        for entry in entries:
            pending.append(entry)
            if len(pending) >= window:
                started = _start_ahead(starts, pending)
                if earlier is not None:
                    yield from earlier[0]
                    _forget_ahead(earlier[1])
                earlier, pending = (pending, started), []
        started = _start_ahead(starts, pending)
        for held, forgets in (earlier or ([], [])), (pending, started):
            yield from held
            _forget_ahead(forgets)

    def _content_read_ahead(self, readers: Executor) -> StartAhead:
        content = self._content
        assert content is not None  # only called when the content checks run
        root = str(self.config.case_root)

        def start(cases: Sequence[PlannedCase]) -> Callable[[], None]:
            keys = content.read_ahead(cases, root, readers)
            return lambda: content.forget(keys)

        return start

    @property
    def content_checked(self) -> bool:
        """Whether this plan made the content checks (the catalogue is known and they were not turned off)."""
        return self._content is not None

    @property
    def content_files_read(self) -> int:
        """Files whose content the checks read in this plan (new, or changed since the cache's result)."""
        return 0 if self._content is None else self._content.files_read

    @property
    def content_files_cached(self) -> int:
        """Files whose checks' result came from the cache, unread."""
        return 0 if self._content is None else self._content.files_cached

    def finish(self) -> list[Finding]:
        return quota_findings(self.quota, self.config.case_root, self.config.engine.live_upload_ceiling)


def _start_ahead(starts: Sequence[StartAhead], entries: Sequence[PlannedCase | Finding]) -> list[Callable[[], None]]:
    cases = [entry for entry in entries if isinstance(entry, PlannedCase)]
    return [start(cases) for start in starts]


def _forget_ahead(forgets: Sequence[Callable[[], None]]) -> None:
    for forget in forgets:
        forget()

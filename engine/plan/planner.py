"""The planner (pure: no network, no database): a case tree and a job → planned cases, plus findings.

It streams: ``os.scandir`` one folder at a time, keeping only its sorted names, and yields each case as soon as its
folder is read, so memory holds one case (and one folder's names), never the tree. Every file of the tree ends up in
exactly one planned item or in one finding's ``files``, except OS litter (``.DS_Store``, ``._*``, …) and symbolic links
no rule uses, which are ignored without a word.

Case trees are hostile until checked (issue 24): a case is its real folder (a link onto another case folder is an
alias, never the case), a link out of a case is never read for it, MetaImage headers are read within a budget and
checked against their data (``engine/plan/metaimage.py``), and names that would drive a terminal block their case.

How a case folder becomes items (the job's rules are described in ``gcbulk.engine.jobfile``):

1. Each file is a *file set*; an ``.mhd`` header takes the data file its ``ElementDataFile`` names (``.zraw``/``.raw``)
   into its set, because Grand Challenge needs both to make one image (docs/gc-api.md §4).
2. Pattern rules (glob / regex) are tried in order on each set's main file; the first that matches takes it.
3. Sets no pattern rule took are numbered 1, 2, … by path, and positional rules take them by number (the tutorial's
   layout: "the first file is the CT image, the second the airway segmentation").
   Before both, ``dicom = {…}`` rules take whole DICOM series found by content (``gcbulk.engine.plan.dicom_case``).
4. Per socket, the sets are grouped (``group = "dicom-series"`` reads SeriesInstanceUID from the headers only;
   ``group = "all"`` makes one set); a socket must end with exactly one set (docs/gc-api.md §3: a socket is unique within a
   display set, and each image value must become exactly one image).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import re
import stat
from collections.abc import Callable, Iterator
from fnmatch import translate
from typing import Any

from gcbulk.engine.dicom.pool import dicom_pool
from gcbulk.engine.gc.limits import MAX_FILENAME, MAX_TITLE
from gcbulk.engine.jobfile import JobConfig, Rule
from gcbulk.engine.plan import findings as finding
from gcbulk.engine.plan.cases import Entry, PlannedCase, PlannedFile, PlannedItem
from gcbulk.engine.plan.dicom_case import (
    CaseHeaders,
    check_image_set,
    claim_series,
    series_findings,
    title_phi,
    unmapped_findings,
)
from gcbulk.engine.plan.file_reads import FileReadCache, PlannerReads
from gcbulk.engine.plan.filesets import dicom_series, files_item, mha_finding, mhd_header, value_item
from gcbulk.engine.plan.findings import Finding, name_trouble, shown
from gcbulk.engine.plan.mapping import MappingSummary
from gcbulk.engine.plan.metaimage import ReadBudget, capacity_problem
from gcbulk.engine.plan.titles import TitleMaker, digest, server_title
from gcbulk.engine.plan.values import canonical_json

__all__ = ["PlannedCase", "PlannedFile", "PlannedItem", "Planner", "canonical_json", "name_problem", "plan_tree"]

_OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "Icon\r", ".localized"})


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _child(folder: str, name: str) -> str:
    """``os.path.join(folder, name)`` for a name from ``os.scandir`` (never absolute, never empty), without its
    generality: it runs for every file of every plan."""
    return f"{folder}{name}" if folder.endswith("/") else f"{folder}/{name}"


def _glob_matcher(pattern: str) -> tuple[re.Pattern[str], bool]:
    """A compiled glob and whether it matches the path inside the case folder (it has a '/') or just the name."""
    return re.compile(translate(pattern)), "/" in pattern


def name_problem(name: str) -> str | None:
    """Why a file name cannot be an upload's filename (docs/gc-api.md §1), or None."""
    if len(name) > MAX_FILENAME:
        return f"{len(name)} characters, over the limit of {MAX_FILENAME}"
    trouble = name_trouble(name)
    if trouble is not None:
        return f"it {trouble}"
    if "\\" in name:
        return "it contains a backslash"
    return None


class Planner:
    """Plans one job's case tree. ``plan()`` yields ``PlannedCase`` and stand-alone ``Finding`` objects."""

    def __init__(self, config: JobConfig, reads: FileReadCache | None = None) -> None:
        """``reads``: where the outcomes of the planner's own reads (headers, JSON values) are kept between plans, so
        a re-plan reads no file that did not change (``engine/plan/file_reads.py``); None: every plan reads them."""
        self.config = config
        self.root = config.case_root
        self.budget = ReadBudget()  # how much of a file a header read may take (engine/plan/metaimage.py)
        self.reads = PlannerReads(self.budget, reads)
        self.depth = config.cases.depth
        self._ignore = [(pattern, *_glob_matcher(pattern)) for pattern in config.cases.ignore]
        self._pattern_rules: list[tuple[Rule, re.Pattern[str], bool]] = []
        self._positional: dict[int, Rule] = {}
        self._dicom_rules: list[tuple[Rule, Any]] = []  # (rule, its path test)
        self._header_pool: Any = None  # processes reading DICOM headers, for the whole plan (dicom rules only)
        # Case folders seen, by (device, inode): a symlink or bind mount to a case folder must not make a second case.
        self._case_folders: dict[tuple[int, int], str] = {}
        self._real_root = str(self.root)  # resolved when the walk starts
        self._required = {rule.socket: rule for rule in config.rules if rule.required}
        self.mapping = MappingSummary(config)  # what went to which socket, for `plan` to show and warn about
        cases = config.cases
        self._titles = TitleMaker(cases.title, None if cases.titles is None else dict(cases.titles))
        for rule in config.rules:
            if rule.dicom is not None:
                self._dicom_rules.append((rule, self._path_test(rule)))
            elif rule.position is not None:
                self._positional[rule.position] = rule
            elif rule.glob is not None:
                self._pattern_rules.append((rule, *_glob_matcher(rule.glob)))
            else:
                assert rule.regex is not None
                self._pattern_rules.append((rule, rule.regex, True))

    @staticmethod
    def _path_test(rule: Rule) -> Any:
        """Whether a file's path passes a dicom rule's optional glob or regex."""
        if rule.glob is not None:
            matcher, on_path = _glob_matcher(rule.glob)
            return lambda e: matcher.match(e.inner if on_path else e.name) is not None
        if rule.regex is not None:
            regex = rule.regex
            return lambda e: regex.match(e.inner) is not None
        return lambda e: True

    # ------------------------------------------------------------------------------------------------- walking
    def plan(self) -> Iterator[PlannedCase | Finding]:
        try:
            root_stat = os.stat(self.root)
        except OSError:
            yield finding.case_root_missing(self.root)
            return
        if not stat.S_ISDIR(root_stat.st_mode):
            yield finding.case_root_missing(self.root)
            return
        self._real_root = os.path.realpath(self.root)
        try:
            yield from self._walk(str(self.root), "", 1, frozenset({(root_stat.st_dev, root_stat.st_ino)}))
        finally:
            if self._header_pool is not None:
                self._header_pool.shutdown(cancel_futures=True)
        yield from self.mapping.findings()

    @staticmethod
    def _list(path: str) -> list[str] | OSError:
        # Names only, sorted: a folder of 100 000 cases costs a few MB of strings. Keeping the DirEntry objects
        # would also keep their cached stat results alive until the whole folder is done (measured: memory grew by
        # ~1 KB per case folder), and every file is stat()ed anyway for its size and mtime.
        try:
            with os.scandir(path) as iterator:
                return sorted(entry.name for entry in iterator)
        except OSError as exc:
            return exc

    @staticmethod
    def _classify(path: str) -> tuple[str, os.stat_result | None, str | None, bool]:
        """('dir' | 'file' | 'loop' | 'unreadable', stat, reason, is a symbolic link), following symbolic links.
        One ``lstat`` for a plain file or folder (the common case); a link costs a ``stat`` more."""
        try:
            st = os.lstat(path)
        except OSError as exc:
            return "unreadable", None, exc.strerror or str(exc), False
        link = stat.S_ISLNK(st.st_mode)
        if link:
            try:
                st = os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return "loop", None, "symbolic link loop", True
                if exc.errno == errno.ENOENT:
                    return "unreadable", None, "it is a broken symbolic link", True
                return "unreadable", None, exc.strerror or str(exc), True
        if stat.S_ISDIR(st.st_mode):
            return "dir", st, None, link
        if stat.S_ISREG(st.st_mode):
            return "file", st, None, link
        return "unreadable", st, "it is not a regular file", link

    def _walk(
        self, path: str, rel: str, depth: int, ancestors: frozenset[tuple[int, int]], via_link: bool = False
    ) -> Iterator[Any]:
        """``via_link``: a symbolic link was followed on the way here (only then can a case folder be an alias)."""
        names = self._list(path)
        if isinstance(names, OSError):
            yield finding.unreadable(path, rel, f"the folder cannot be listed: {names.strerror}")
            return
        for name in names:
            child = _child(path, name)
            child_rel = _join(rel, name)
            kind, st, reason, link = self._classify(child)
            if kind == "dir":
                assert st is not None
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    yield finding.symlink_loop(child)
                elif depth == self.depth:
                    alias_of = self._alias_of(child, child_rel) if via_link or link else None
                    if alias_of is not None:
                        # A case is its real folder: a link to another case folder (aa_backup_link -> patient001)
                        # would otherwise be planned first, by sort order, and take that case over.
                        yield finding.case_alias(child, child_rel, alias_of)
                        continue
                    first = self._case_folders.setdefault(key, child_rel)
                    if first != child_rel:
                        yield finding.same_case_folder(child, child_rel, first)
                    else:
                        yield from self._case(child, child_rel, ancestors | {key})
                else:
                    yield from self._walk(child, child_rel, depth + 1, ancestors | {key}, via_link or link)
            elif kind == "loop":
                yield finding.symlink_loop(child, (child_rel,))
            elif self._litter(name):
                continue
            else:
                yield finding.outside_case(child, child_rel, self.depth)

    def _alias_of(self, path: str, rel: str) -> str | None:
        """The case folder (relative to the case root) that ``path`` really is, when it is reached through a symbolic
        link and that real folder is itself a case folder of this tree (so it is planned under its own name)."""
        real = os.path.realpath(path)
        if real == os.path.join(self._real_root, rel):
            return None  # the links on the way lead back to where they stand
        inside = os.path.relpath(real, self._real_root)
        if inside == ".." or inside.startswith("../") or os.path.isabs(inside):
            return None  # a link to data elsewhere (another disk): the link is the only way to this case
        if inside.count("/") + 1 != self.depth:
            return None
        return inside

    @staticmethod
    def _litter(name: str) -> bool:
        """Files the OS leaves in folders (Finder, Explorer, AppleDouble), never data: ignored without a word."""
        return name in _OS_LITTER or name.startswith("._")

    def _collect(
        self,
        path: str,
        rel: str,
        inner: str,
        ancestors: frozenset[tuple[int, int]],
        files: list[Entry],
        findings: list[Finding],
        case_real: Callable[[], str],
    ) -> None:
        """The files of a case folder (recursively) into ``files``; ``case_real()`` is its resolved real path (asked
        for only when a link is met): every file the case sends must resolve inside it."""
        names = self._list(path)
        if isinstance(names, OSError):
            findings.append(finding.unreadable(path, rel, f"the folder cannot be listed: {names.strerror}"))
            return
        for name in names:
            child = _child(path, name)
            child_rel = _join(rel, name)
            child_inner = _join(inner, name)
            kind, st, reason, link = self._classify(child)
            outside = None
            if link and kind in ("dir", "file"):
                real, inside = os.path.realpath(child), case_real()
                if os.path.commonpath((real, inside)) != inside:
                    outside = real
            if kind == "dir":
                assert st is not None
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    if self._used(name, child_inner):
                        findings.append(finding.symlink_loop(child))
                elif outside is not None:
                    findings.append(finding.folder_link_outside_case(child, child_rel, rel))
                else:
                    self._collect(child, child_rel, child_inner, ancestors | {key}, files, findings, case_real)
                continue
            ignored_by = self._ignored_by(name, child_inner)
            if ignored_by is not None:
                findings.append(finding.ignored(child, child_rel, ignored_by))
            elif self._litter(name):
                continue
            elif link and kind in ("loop", "unreadable") and not self._used(name, child_inner):
                continue  # a broken link or a link loop no rule would take stops nothing
            elif kind == "loop":
                findings.append(finding.symlink_loop(child, (child_rel,)))
            elif kind == "unreadable":
                findings.append(finding.unreadable(child, child_rel, reason or "unknown error"))
            elif (problem := name_problem(name)) is not None:
                findings.append(finding.bad_name(child, child_rel, problem))
            elif not os.access(child, os.R_OK):
                findings.append(finding.unreadable(child, child_rel, "permission denied"))
            elif st is not None and st.st_size == 0:
                findings.append(finding.zero_bytes(child, child_rel))
            else:
                assert st is not None
                files.append(
                    Entry(child_rel, child_inner, name, child, st.st_size, st.st_mtime_ns, link, outside, st.st_ino)
                )

    def _used(self, name: str, inner: str, *, by_content: bool = False) -> bool:
        """Whether a rule names this path (a glob, a regex or a dicom rule's path test): a positional rule names no
        file, so a broken link is never one a positional rule counts on. ``by_content``: a dicom rule without a path
        test counts too (it would take any file that turns out to be DICOM)."""
        if any(matcher.match(inner if on_path else name) for _, matcher, on_path in self._pattern_rules):
            return True
        probe = Entry(inner, inner, name, inner, 0, 0)
        for rule, test in self._dicom_rules:
            has_path_test = rule.glob is not None or rule.regex is not None
            if (has_path_test and test(probe)) or (by_content and not has_path_test):
                return True
        return False

    def _ignored_by(self, name: str, inner: str) -> str | None:
        for pattern, matcher, on_path in self._ignore:
            if matcher.match(inner if on_path else name):
                return pattern
        return None

    # ------------------------------------------------------------------------------------------------- one case
    def _title(self, rel: str, findings: list[Finding], path: str) -> str:
        title = self._titles.title(rel)
        if title is None:
            # No row in cases.titles_csv: blocked; recorded under a stand-in that names no identifier.
            title = f"untitled-{digest(rel)}"
            findings.append(finding.no_title_row(path, shown(rel), str(self.config.cases.titles_csv)))
        return title

    def _case(self, path: str, rel: str, ancestors: frozenset[tuple[int, int]]) -> Iterator[Any]:
        files: list[Entry] = []
        findings: list[Finding] = []
        self._collect(path, rel, "", ancestors, files, findings, functools.cache(lambda: os.path.realpath(path)))
        if not files and not findings:
            yield finding.empty_case(path)
            return
        files.sort(key=lambda e: e.inner)
        # A link out of the case is never read for it (not even a header): one a rule would take blocks the case, an
        # .mhd's data file is judged with its header, and any other is ignored.
        links_out = {e.inner: e for e in files if e.outside is not None}
        if links_out:
            files = [e for e in files if e.outside is None]
            companions = {self._companion_name(e) for e in files if e.name.lower().endswith(".mhd")}
            for e in links_out.values():
                if e.inner not in companions and self._used(e.name, e.inner, by_content=True):
                    findings.append(finding.link_outside_case(e.path, e.rel, shown(rel)))
        trouble = name_trouble(rel)
        if trouble is not None:
            # The title and the ledger's keys must be text that shows as itself; a folder name that is not UTF-8, or
            # holds control or bidirectional characters, blocks only its case, which is recorded under the escaped
            # name so it is counted and shown (never a crash, issue 11; never raw bytes on a terminal, issue 24).
            yield PlannedCase(
                title=shown(self._title(rel, findings, path)),
                folder=shown(rel),
                items=(),
                findings=(*findings, finding.bad_folder_name(path, shown(rel), tuple(e.rel for e in files), trouble)),
            )
            return
        # The title as the server will store it (issue 24: it trims surrounding whitespace and compares Unicode NFC;
        # docs/gc-api.md §3: unique within the study), so the ledger, the duplicate check and the display set agree.
        title = server_title(self._title(rel, findings, path))
        sets = self._file_sets(files, findings, title, links_out)
        headers = CaseHeaders()
        claims = self._claim(sets, findings, title, headers, path)
        items = self._items(claims, findings, title, headers)
        findings.extend(title_phi(path, title, headers, self.config.dicom.allow_phi_titles))
        for socket, rule in self._required.items():
            if socket not in claims and socket not in self.config.values:
                findings.append(finding.missing_required(path, socket, rule.label, title))
        if (title_trouble := name_trouble(title)) is not None:
            title = shown(title)  # blocked; kept (and shown) only escaped
            findings.append(finding.bad_title(path, title, title_trouble))
        elif not title.strip():
            findings.append(finding.bad_title(path, title, "is empty"))
        elif len(title) > MAX_TITLE:
            findings.append(finding.bad_title(path, title, f"has {len(title)} characters, over {MAX_TITLE}"))
        findings = [f if f.case is not None else dataclasses.replace(f, case=title) for f in findings]
        if not any(item.files or item.value_path for item in items) and not any(f.blocking for f in findings):
            yield from findings
            yield finding.nothing_mapped(path)
            return
        case = PlannedCase(title=title, folder=rel, items=tuple(items), findings=tuple(findings))
        self.mapping.add(case)
        yield case

    def _companion_name(self, mhd: Entry) -> str | None:
        """The data file an .mhd names, relative to the case folder (None when its header does not name one)."""
        header, _ = mhd_header(mhd, self.reads)
        if header is None or header.local:
            return None
        return os.path.normpath(_join(mhd.inner.rpartition("/")[0], header.data_file))

    def _file_sets(
        self, files: list[Entry], findings: list[Finding], title: str, links_out: dict[str, Entry] | None = None
    ) -> list[list[Entry]]:
        """Each file alone, except that an .mhd header takes its data file along. MetaImage headers are read here,
        within the header budget, so an image the importer would refuse for its header is refused before upload."""
        by_inner = {e.inner: e for e in files}
        companion_of: dict[str, str] = {}  # mhd inner -> data file inner
        taken: set[str] = set()
        rejected: set[str] = set()
        for e in files:
            lower = e.name.lower()
            if lower.endswith(".mha"):
                problem = mha_finding(e, title, self.reads)
                if problem is not None:
                    findings.append(problem)
                    rejected.add(e.inner)
                continue
            if not lower.endswith(".mhd"):
                continue
            header, reason = mhd_header(e, self.reads)
            if header is None:
                findings.append(finding.unreadable(e.path, e.rel, reason or "unknown error"))
                rejected.add(e.inner)
                continue
            if header.local:  # ElementDataFile = LOCAL: the pixels are in the header file itself
                problem_text = capacity_problem(header, e.size - header.header_length, "the file")
                if problem_text is not None:
                    findings.append(finding.bad_image_header(e.path, (e.rel,), problem_text, title))
                    rejected.add(e.inner)
                continue
            data_file = header.data_file
            data_inner = os.path.normpath(_join(e.inner.rpartition("/")[0], data_file))
            if os.path.isabs(data_file) or data_inner == ".." or data_inner.startswith("../"):
                findings.append(finding.companion_outside(e.path, (e.rel,), data_file, title))
                rejected.add(e.inner)
                continue
            if links_out and data_inner in links_out:  # a link out of the case: its bytes are never read for this case
                findings.append(finding.companion_outside(e.path, (e.rel, links_out[data_inner].rel), data_file, title))
                rejected.add(e.inner)
                continue
            if data_inner not in by_inner or data_inner in taken or data_inner == e.inner:
                findings.append(finding.missing_companion(e.path, (e.rel,), data_file, title))
                rejected.add(e.inner)
                continue
            data = by_inner[data_inner]
            problem_text = capacity_problem(header, data.size, f"its data file {data_file!r}")
            if problem_text is not None:
                findings.append(finding.bad_image_header(e.path, (e.rel, data.rel), problem_text, title))
                rejected.update((e.inner, data_inner))
                continue
            companion_of[e.inner] = data_inner
            taken.add(data_inner)
        sets = []
        for e in files:
            if e.inner in taken or e.inner in rejected:
                continue
            companion = companion_of.get(e.inner)
            sets.append([e] if companion is None else [e, by_inner[companion]])
        return sets

    def _claim(
        self, sets: list[list[Entry]], findings: list[Finding], title: str, headers: CaseHeaders, path: str
    ) -> dict[str, list[tuple[Rule, list[list[Entry]]]]]:
        """socket → [(rule, file sets it took)], in rule order."""
        taken: dict[int, list[list[Entry]]] = {}
        if self._dicom_rules:
            if self._header_pool is None and (self.config.dicom.workers or os.cpu_count() or 1) > 1:
                self._header_pool = dicom_pool(self.config.dicom.workers)
            headers.read((s[0] for s in sets if len(s) == 1), self.config.dicom.workers, self._header_pool)
            taken, sets, series = claim_series(sets, headers, self._dicom_rules)
            entries = {e.path: e for file_set in sets for e in file_set}
            entries.update({e.path: e for file_sets in taken.values() for file_set in file_sets for e in file_set})
            findings.extend(series_findings(series, entries, path, title))
        unclaimed = []
        for file_set in sets:
            main = file_set[0]
            for rule, matcher, on_path in self._pattern_rules:
                if matcher.match(main.inner if on_path else main.name):
                    taken.setdefault(rule.index, []).append(file_set)
                    break
            else:
                unclaimed.append(file_set)
        unmatched = []
        for number, file_set in enumerate(unclaimed, 1):
            by_position = self._positional.get(number)
            if by_position is None:
                unmatched.append(file_set)
            else:
                taken.setdefault(by_position.index, []).append(file_set)
        if self._dicom_rules:  # a DICOM series no rule took is reported as the series it is
            unmapped, unmatched = unmapped_findings(unmatched, headers, title)
            findings.extend(unmapped)
        for file_set in unmatched:
            if file_set[0].link:
                continue  # a symbolic link no rule uses is ignored (it may lead anywhere; nothing reads it)
            findings.append(finding.unmatched(file_set[0].path, tuple(e.rel for e in file_set), title))
        claims: dict[str, list[tuple[Rule, list[list[Entry]]]]] = {}
        for rule in self.config.rules:
            if rule.index in taken:
                claims.setdefault(rule.socket, []).append((rule, taken[rule.index]))
        return claims

    def _items(
        self,
        claims: dict[str, list[tuple[Rule, list[list[Entry]]]]],
        findings: list[Finding],
        title: str,
        headers: CaseHeaders,
    ) -> list[PlannedItem]:
        items = []
        for socket, rule_sets in claims.items():
            file_sets: list[list[Entry]] = []
            value_files: list[Entry] = []
            for rule, sets in rule_sets:
                if rule.value:
                    value_files.extend(e for file_set in sets for e in file_set)
                elif rule.group == "all":
                    file_sets.append([e for file_set in sets for e in file_set])
                elif rule.group == "dicom-series":
                    file_sets.extend(dicom_series(sets, findings, title, headers))
                else:
                    file_sets.extend(sets)
            sources = len(file_sets) + len(value_files) + (socket in self.config.values)
            all_files = tuple(e.rel for file_set in file_sets for e in file_set) + tuple(e.rel for e in value_files)
            if sources > 1:
                first = (file_sets[0][0] if file_sets else value_files[0]).path
                findings.append(finding.two_file_sets(first, socket, sources, all_files, title))
            elif value_files:
                item = value_item(socket, value_files[0], findings, title, self.reads, rule_sets[0][0].index)
                if item is not None:
                    items.append(item)
            elif file_sets:
                dicom = (
                    headers.dicom(file_sets[0])
                    if any(r.dicom is not None or r.group == "dicom-series" for r, _ in rule_sets)
                    else None
                )
                problems = (
                    [] if dicom is None else check_image_set(socket, file_sets[0], dicom, self.config.dicom, title)
                )
                findings.extend(problems)
                if any(p.blocking for p in problems):  # the server would refuse this image set: kept out of the plan
                    continue
                item = files_item(socket, file_sets[0], findings, title, rule_sets[0][0].index)
                if item is not None:
                    items.append(item)
        for socket, value in self.config.values.items():
            if socket not in claims:
                items.append(PlannedItem(socket_slug=socket, value_json=canonical_json(value)))
        return items


def plan_tree(config: JobConfig) -> Iterator[PlannedCase | Finding]:
    """Stream the plan of the job's case tree: planned cases and stand-alone findings, in path order."""
    return Planner(config).plan()

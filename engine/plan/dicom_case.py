"""DICOM in one case folder, for the planner (pure: reads headers, never pixels; no network, no database).

With ``dicom = {…}`` rules in the job, every file of the case is looked at by content (``engine/dicom/headers.py``),
the DICOM files are grouped into series in slice order, and each series goes whole to the first dicom rule whose
header fields match (and whose glob/regex, if it has one, matches every file's path). Series no dicom rule takes stay
files for the other rules, so ``glob = "*.dcm"`` with ``group = "dicom-series"`` works as before. What the server would
refuse in an image set (two values of one of its seven equal tags; a file the de-identifier rejects; an empty image
name) is a blocking finding naming the files, made here because the server's refusal is visible through no API
(docs/gc-api.md §10, §11). So is an image name that would carry what de-identification takes out (``phi.py``).
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from gcbulk.engine.dicom.headers import DicomHeader, NotDicom, read_header, read_headers
from gcbulk.engine.dicom.options import DicomOptions, render_image_name
from gcbulk.engine.dicom.series import Series, group_series, image_set_problems, matches
from gcbulk.engine.plan import findings as finding
from gcbulk.engine.plan.cases import Entry
from gcbulk.engine.plan.findings import Finding
from gcbulk.engine.plan.phi import identifier_patterns, identifiers_in, removed_fields

_SHOWN_FILES = 5  # per conflicting value in a message; the finding's ``files`` lists them all


@dataclass
class CaseHeaders:
    """The DICOM headers of one case's files, by absolute path, read once."""

    by_path: dict[str, DicomHeader | NotDicom] = field(default_factory=dict)

    def read(self, entries: Iterable[Entry], workers: int | None, pool: Executor | None = None) -> None:
        todo = [e.path for e in entries if e.path not in self.by_path]
        for path, header in zip(todo, read_headers(todo, workers=workers, pool=pool), strict=True):
            self.by_path[path] = header

    def header(self, entry: Entry) -> DicomHeader | NotDicom:
        if entry.path not in self.by_path:
            self.by_path[entry.path] = read_header(entry.path)
        return self.by_path[entry.path]

    def dicom(self, entries: Iterable[Entry]) -> list[DicomHeader] | None:
        """The headers of ``entries`` when every one is DICOM, else None."""
        headers = [self.by_path.get(e.path) for e in entries]
        return headers if all(isinstance(h, DicomHeader) for h in headers) else None  # type: ignore[return-value]


def claim_series(
    sets: list[list[Entry]], headers: CaseHeaders, rules: Sequence[tuple[object, Callable[[Entry], bool]]]
) -> tuple[dict[int, list[list[Entry]]], list[list[Entry]], list[Series]]:
    """(rule index → the series it takes, as file lists in slice order; the file sets left for the other rules;
    every series of the case)."""
    single = {file_set[0].path: file_set[0] for file_set in sets if len(file_set) == 1}
    series = group_series(h for p in single if isinstance(h := headers.by_path.get(p), DicomHeader))
    taken: dict[int, list[list[Entry]]] = {}
    taken_paths: set[str] = set()
    for one in series:
        for rule, on_path in rules:
            if matches(one, rule.dicom) and all(on_path(single[p]) for p in one.paths):  # type: ignore[attr-defined]
                taken.setdefault(rule.index, []).append([single[p] for p in one.paths])  # type: ignore[attr-defined]
                taken_paths.update(one.paths)
                break
    return taken, [s for s in sets if s[0].path not in taken_paths], series


def series_findings(series: list[Series], entries: Mapping[str, Entry], case_path: str, title: str) -> list[Finding]:
    """Folders holding several series (info) and a case mixing studies (warning)."""
    found = []
    by_folder: dict[str, list[Series]] = defaultdict(list)
    for one in series:
        for folder in sorted({entries[p].inner.rpartition("/")[0] for p in one.paths}):
            by_folder[folder].append(one)
    for folder, here in by_folder.items():
        if len(here) > 1:
            found.append(
                finding.dicom_multi_series(
                    os.path.join(case_path, folder), folder, "; ".join(s.describe() for s in here), title
                )
            )
    studies: dict[str, list[Series]] = defaultdict(list)
    for one in series:
        studies[one.first.study_uid].append(one)
    if len(studies) > 1:
        described = (
            f"{len(studies)} studies ("
            + "; ".join(
                f"study {n}: " + ", ".join(s.describe() for s in group) for n, group in enumerate(studies.values(), 1)
            )
            + ")"
        )
        found.append(finding.dicom_mixed_studies(case_path, described, title))
    return found


def unmapped_findings(
    unmatched: list[list[Entry]], headers: CaseHeaders, title: str
) -> tuple[list[Finding], list[list[Entry]]]:
    """Findings for DICOM series no rule took (one per series, its files named); the non-DICOM sets are returned."""
    dicom: dict[str, Entry] = {}
    rest = []
    for file_set in unmatched:
        header = headers.by_path.get(file_set[0].path)
        if len(file_set) == 1 and isinstance(header, DicomHeader):
            dicom[file_set[0].path] = file_set[0]
        else:
            rest.append(file_set)
    found = []
    for one in group_series(headers.by_path[p] for p in dicom):  # type: ignore[misc]
        fields = ", ".join(f"{name}={one.first.field(name)!r}" for name in ("Modality", "SeriesDescription"))
        found.append(
            finding.dicom_series_unmapped(
                one.first.path, one.describe(), fields, tuple(dicom[p].rel for p in one.paths), title
            )
        )
    return found, rest


def _listed(paths: Iterable[str], rel_of: Mapping[str, str]) -> str:
    paths = list(paths)
    shown = ", ".join(rel_of.get(p, p) for p in paths[:_SHOWN_FILES])
    return shown + (f", … ({len(paths) - _SHOWN_FILES} more)" if len(paths) > _SHOWN_FILES else "")


def check_image_set(
    socket: str, file_set: list[Entry], headers: list[DicomHeader], options: DicomOptions, title: str
) -> list[Finding]:
    """The server's checks of one DICOM image set, made locally: blocking findings naming the files, or []."""
    rel_of = {e.path: e.rel for e in file_set}
    found: list[Finding] = []
    named: set[str] = set()  # each file is kept out of the plan by one finding (planner.py's invariant)
    for problem in image_set_problems(headers):
        detail = "; ".join(f"{value or '(empty)'}: {_listed(paths, rel_of)}" for value, paths in problem.files.items())
        files = tuple(rel_of[p] for paths in problem.files.values() for p in paths if p not in named)
        named.update(p for paths in problem.files.values() for p in paths)
        found.append(
            finding.dicom_image_set(
                file_set[0].path, problem.code, socket, f"{problem.message} [{detail}]", files, title
            )
        )
    template = options.image_name_template(socket)
    removed = removed_fields(template, headers[0])
    if removed:
        kept_out = tuple(e.rel for e in file_set if e.path not in named)
        found.append(
            finding.image_name_not_deidentified(
                file_set[0].path, socket, template, removed, options.allow_phi_titles, kept_out, title
            )
        )
        if not options.allow_phi_titles:
            named.update(e.path for e in file_set)
    name = render_image_name(template, headers[0], socket=socket, title=title)
    if not name:
        found.append(
            finding.dicom_image_name_empty(
                file_set[0].path, socket, template, tuple(e.rel for e in file_set if e.path not in named), title
            )
        )
        named.update(e.path for e in file_set)
    elif kinds := identifiers_in(name, identifier_patterns(headers)):
        allowed = options.allow_phi_titles
        kept_out = () if allowed else tuple(e.rel for e in file_set if e.path not in named)
        what = f"image name for socket {socket!r} (image_name = {template!r})"
        found.append(finding.phi_in_name(file_set[0].path, what, kinds, allowed, title, kept_out))
        if not allowed:
            named.update(e.path for e in file_set)
    blocking = [index for index, f in enumerate(found) if f.blocking]
    left = tuple(e.rel for e in file_set if e.path not in named)
    if blocking and left:  # e.g. the files of the accepted SOP class when others are rejected: kept out with the set
        first = blocking[0]
        found[first] = dataclasses.replace(found[first], files=found[first].files + left)
    return found


def title_phi(path: str, title: str, headers: CaseHeaders, allowed: bool) -> list[Finding]:
    """A finding when the case's title holds a PatientID or PatientName from the case's own DICOM headers."""
    read = [h for h in headers.by_path.values() if isinstance(h, DicomHeader)]
    kinds = identifiers_in(title, identifier_patterns(read)) if read else []
    return [finding.phi_in_name(path, f"title {title!r}", kinds, allowed, title)] if kinds else []

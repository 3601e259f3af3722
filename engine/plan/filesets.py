"""Reading a case's files far enough to plan them: .mhd headers (which data file they take along), DICOM headers
(which series), JSON value files; and turning a socket's file set into a planned item. Pure: reads files, no network,
no database.
"""

from __future__ import annotations

from gcbulk.engine.dicom.headers import DicomHeader, NotDicom
from gcbulk.engine.dicom.series import group_series
from gcbulk.engine.gc.limits import MAX_FILES_PER_IMAGE
from gcbulk.engine.plan import findings as finding
from gcbulk.engine.plan.cases import Entry, PlannedFile, PlannedItem
from gcbulk.engine.plan.dicom_case import CaseHeaders
from gcbulk.engine.plan.file_reads import FileStamp, PlannerReads, ValueFileError
from gcbulk.engine.plan.findings import Finding
from gcbulk.engine.plan.metaimage import (
    BadHeader,
    MetaHeader,
    NotMetaImage,
)


def stamp(entry: Entry) -> FileStamp:
    """The file as the walk saw it, the key of what the planner reads from it (``engine/plan/file_reads.py``)."""
    return FileStamp(entry.path, entry.size, entry.mtime_ns, entry.inode)


def mhd_header(entry: Entry, reads: PlannerReads) -> tuple[MetaHeader | None, str | None]:
    """(the .mhd header, None) or (None, why it cannot be used)."""
    try:
        header = reads.header(stamp(entry))
    except OSError as exc:
        return None, f"the .mhd header cannot be read: {exc.strerror}"
    except NotMetaImage as exc:
        return None, f"the .mhd header cannot be used: {exc}"
    except BadHeader as exc:
        return None, str(exc)
    name = header.data_file
    if name.upper().startswith("LIST") or "%" in name:
        return None, f"multi-file .mhd data (ElementDataFile = {name}) is not supported; convert it to .mha"
    return header, None


def mha_finding(entry: Entry, title: str, reads: PlannerReads) -> Finding | None:
    """What is wrong with an .mha's header, read within the header budget: data kept in another file (it would not
    be sent), sizes that are not positive, or voxels the file cannot hold. None for a file with no MetaImage header
    at all: SimpleITK's own read (``engine/plan/content.py``) says what is wrong with it."""
    try:
        problem = reads.mha_problem(stamp(entry))
    except OSError as exc:
        return finding.unreadable(entry.path, entry.rel, exc.strerror or str(exc))
    if problem is None:
        return None
    if problem.kind == "data-elsewhere":
        return finding.mha_data_elsewhere(entry.path, (entry.rel,), problem.detail, title)
    return finding.bad_image_header(entry.path, (entry.rel,), problem.detail, title)


def dicom_series(
    sets: list[list[Entry]], findings: list[Finding], title: str, headers: CaseHeaders
) -> list[list[Entry]]:
    """One file set per SeriesInstanceUID, in slice order, reading only the headers (``engine/dicom/headers.py``)."""
    by_path: dict[str, Entry] = {}
    dicom: list[DicomHeader] = []
    for file_set in sets:
        for e in file_set:
            header = headers.header(e)
            if isinstance(header, NotDicom):
                findings.append(finding.not_dicom(e.path, e.rel, header.reason, title))
                continue
            by_path[e.path] = e
            dicom.append(header)
    return [[by_path[p] for p in series.paths] for series in group_series(dicom)]


def value_item(
    socket: str, entry: Entry, findings: list[Finding], title: str, reads: PlannerReads, rule: int | None = None
) -> PlannedItem | None:
    try:
        value = reads.value(stamp(entry))
    except OSError as exc:
        findings.append(finding.unreadable(entry.path, entry.rel, exc.strerror or str(exc)))
        return None
    except ValueFileError as exc:
        findings.append(finding.bad_json(entry.path, entry.rel, str(exc), title))
        return None
    return PlannedItem(socket_slug=socket, value_json=value, value_path=entry.rel, rule=rule)


def files_item(
    socket: str, file_set: list[Entry], findings: list[Finding], title: str, rule: int | None = None
) -> PlannedItem | None:
    """The item of a socket's file set; ``rule``: the job's rules[N] that took it."""
    rels = tuple(e.rel for e in file_set)
    if len(file_set) > MAX_FILES_PER_IMAGE:
        findings.append(finding.too_many_files(file_set[0].path, socket, len(file_set), rels, title))
        return None
    names: dict[str, Entry] = {}
    for e in file_set:
        if e.name in names:
            findings.append(finding.duplicate_file_names(e.path, socket, e.name, rels, title))
            return None
        names[e.name] = e
    return PlannedItem(
        socket_slug=socket,
        files=tuple(PlannedFile(path=e.rel, name=e.name, size=e.size, mtime_ns=e.mtime_ns) for e in file_set),
        rule=rule,
    )

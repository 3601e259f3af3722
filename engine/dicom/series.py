"""DICOM headers → series in slice order, and the checks the server makes on a DICOM image set, made locally.

Grand Challenge de-identifies an uploaded DICOM image set again and asserts seven tags equal in every file of it
(StudyInstanceUID, SeriesInstanceUID, PatientID, StudyID, StudyDate, AccessionNumber, SeriesNumber); a failure there
is visible through no API and the uploads are deleted (docs/gc-api.md §10, §11). So each of those is a finding here,
naming every file of each conflicting value, before a byte is sent. The de-identification procedure
rejects SOP classes it does not know (structured reports, presentation states, …): those files are reported, not
sent.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from gcbulk.engine.dicom.headers import DicomHeader


@dataclass(frozen=True)
class Series:
    series_uid: str
    headers: tuple[DicomHeader, ...]  # in slice order

    @property
    def first(self) -> DicomHeader:
        return self.headers[0]

    @property
    def paths(self) -> list[str]:
        return [h.path for h in self.headers]

    def describe(self) -> str:
        h = self.first
        text = f"{h.modality or '?'} series {h.series_number if h.series_number is not None else '?'}"
        return text + (f" ({h.series_description})" if h.series_description else "") + f", {len(self.headers)} files"


@dataclass(frozen=True)
class ImageSetProblem:
    """One reason the server would refuse an image set; ``files`` groups the offending files by their value."""

    code: str
    message: str
    files: Mapping[str, tuple[str, ...]]


def _normal(orientation: tuple[float, ...]) -> tuple[float, float, float]:
    row, col = orientation[:3], orientation[3:]
    return (row[1] * col[2] - row[2] * col[1], row[2] * col[0] - row[0] * col[2], row[0] * col[1] - row[1] * col[0])


def _slice_key(header: DicomHeader) -> tuple[float, float, str]:
    """Position along the slice normal where the headers say it, else the instance number, else the path."""
    if header.position is not None and header.orientation is not None:
        normal = _normal(header.orientation)
        along = sum(p * n for p, n in zip(header.position, normal, strict=True))
        return (0.0, along, header.path)
    if header.instance_number is not None:
        return (1.0, float(header.instance_number), header.path)
    return (2.0, 0.0, header.path)


def group_series(headers: Iterable[DicomHeader]) -> list[Series]:
    """One ``Series`` per SeriesInstanceUID, files in slice order; series ordered by series number, then UID."""
    by_uid: dict[str, list[DicomHeader]] = defaultdict(list)
    for header in headers:
        by_uid[header.series_uid].append(header)
    series = [Series(uid, tuple(sorted(group, key=_slice_key))) for uid, group in by_uid.items()]
    return sorted(series, key=lambda s: (s.first.series_number is None, s.first.series_number or 0, s.series_uid))


def matches(series: Series, criteria: Mapping[str, str]) -> bool:
    """Whether the series' header fields match every glob of ``criteria`` (e.g. ``{"Modality": "CT",
    "SeriesDescription": "*lung*"}``), case-insensitively."""
    return all(fnmatch.fnmatch(series.first.field(name).lower(), pattern.lower()) for name, pattern in criteria.items())


def _accepted_sop_classes() -> frozenset[str] | None:
    """The SOP classes Grand Challenge's de-identification procedure keeps; None when it accepts any."""
    from grand_challenge_dicom_de_id_procedure import procedure

    if procedure.get("default") != "R":
        return None
    return frozenset(procedure["sopClass"])


def patient_label(patient_id: str) -> str:
    """A PatientID as findings, logs and the ledger show it: a short hash, never the identifier itself."""
    return identifier_label("PatientID", patient_id)


def identifier_label(keyword: str, value: str) -> str:
    """An identifying value as findings show it: a short hash, never the identifier itself."""
    if not value:
        return ""
    return f"{keyword}#" + hashlib.sha256(value.encode()).hexdigest()[:8]


def _seven_tags() -> tuple[tuple[str, str, Callable[[DicomHeader], str | None]], ...]:
    """The tags the server asserts equal in every file of an image set (``cases/models.py``: the de-identifier's
    ``assert_unique_value_for``, docs/gc-api.md §11): (finding code, keyword, the value as a finding shows it, or None
    when the file lacks the element — the server compares only the elements a file has)."""
    return (
        ("dicom-two-patients", "PatientID", lambda h: patient_label(h.patient_id)),
        ("dicom-two-studies", "StudyInstanceUID", lambda h: h.study_uid),
        ("dicom-two-series", "SeriesInstanceUID", lambda h: h.series_uid),
        ("dicom-two-study-ids", "StudyID", lambda h: _labelled("StudyID", h.study_id)),
        ("dicom-two-study-dates", "StudyDate", lambda h: h.study_date),
        ("dicom-two-accession-numbers", "AccessionNumber", lambda h: _labelled("AccessionNumber", h.accession_number)),
        (
            "dicom-two-series-numbers",
            "SeriesNumber",
            lambda h: None if h.series_number is None else str(h.series_number),
        ),
    )


def _labelled(keyword: str, value: str | None) -> str | None:
    return None if value is None else identifier_label(keyword, value)


def image_set_problems(headers: Iterable[DicomHeader]) -> list[ImageSetProblem]:
    """What the server would refuse in one DICOM image set: two values of any of the seven tags it asserts equal
    (StudyInstanceUID, SeriesInstanceUID, PatientID, StudyID, StudyDate, AccessionNumber, SeriesNumber), and files
    whose SOP class the de-identification procedure rejects. Identifiers are shown as hashes."""
    headers = list(headers)
    problems = []
    for code, what, value_of in _seven_tags():
        groups: dict[str, list[str]] = defaultdict(list)
        for header in headers:
            value = value_of(header)
            if value is not None:
                groups[value].append(header.path)
        if len(groups) > 1:
            shown = ", ".join(f"{value or '(empty)'!s} in {len(paths)} file(s)" for value, paths in groups.items())
            problems.append(
                ImageSetProblem(
                    code,
                    f"one image set holds {len(groups)} different {what} values ({shown}); Grand Challenge "
                    "accepts exactly one per image set",
                    {k: tuple(v) for k, v in groups.items()},
                )
            )
    accepted = _accepted_sop_classes()
    if accepted is not None:
        rejected: dict[str, list[str]] = defaultdict(list)
        for header in headers:
            if header.sop_class_uid not in accepted:
                rejected[header.sop_class_uid].append(header.path)
        if rejected:
            problems.append(
                ImageSetProblem(
                    "dicom-sop-class-rejected",
                    f"Grand Challenge's de-identification procedure rejects SOP class(es) {', '.join(sorted(rejected))} "
                    f"(it keeps {', '.join(sorted(accepted))}: CT, MR and whole-slide images)",
                    {k: tuple(v) for k, v in rejected.items()},
                )
            )
    return problems

"""Which files are DICOM, and the few header fields gcbulk needs from each — read without pixel data.

Found by content, never by extension: a file is DICOM when it has the Part 10 preamble (``DICM`` at byte 128), or,
for the older files without one, when a forced header parse finds a SOP Class and a Series Instance UID. Exports from
PACS often have no extension at all, and a ``.dcm`` may be a DICOMDIR or a text note.

Parsing headers is CPU-bound Python (pydicom), so a large tree is read by a process pool sized to the cores, in
chunks so the pool's per-task overhead stays small against the per-file work.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from gcbulk.engine.dicom.pool import dicom_pool

# The tags read from each file; everything else, pixel data above all, is skipped by pydicom.
HEADER_TAGS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    # The server asserts these equal in every file of an image set (docs/gc-api.md §11); PatientName is read only to
    # catch it in a title or image name (engine/plan/phi.py).
    "StudyID",
    "StudyDate",
    "AccessionNumber",
    "PatientName",
)
_PREAMBLE = 128
_CHUNK = 256  # files per pool task
_SMALL_CHUNK = 16  # the least worth sending to a running pool (a task costs about a millisecond)


@dataclass(frozen=True, slots=True)
class DicomHeader:
    path: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    modality: str
    series_description: str
    series_number: int | None
    instance_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    # None when the file lacks the element: the server's de-identifier compares only the elements a file has.
    study_id: str | None = None
    study_date: str | None = None
    accession_number: str | None = None
    patient_name: str = ""

    def field(self, name: str) -> str:
        """A header field by the name a job file's rule uses (``Modality``, ``SeriesDescription``, …)."""
        value = {
            "Modality": self.modality,
            "SeriesDescription": self.series_description,
            "SeriesNumber": self.series_number,
            "PatientID": self.patient_id,
            "SOPClassUID": self.sop_class_uid,
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
        }.get(name)
        return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class NotDicom:
    path: str
    reason: str


def has_preamble(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(_PREAMBLE + 4)
    return len(head) == _PREAMBLE + 4 and head[_PREAMBLE:] == b"DICM"


def _number(value: object) -> int | None:
    # pydicom's IS and DS values are int / float / str subclasses; a multi-valued or missing element is no number.
    if not isinstance(value, int | float | str) or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    if not isinstance(value, Iterable):
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def read_header(path: str) -> DicomHeader | NotDicom:
    """The header of one file, or why it is not a DICOM file gcbulk can use. Reads no pixel data."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        preamble = has_preamble(path)
        with warnings.catch_warnings():  # a forced parse of a non-DICOM file warns about its "VR": not news here
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS), force=not preamble
            )
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        return NotDicom(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})")
    series_uid = str(dataset.get("SeriesInstanceUID", "") or "")
    sop_class = str(dataset.get("SOPClassUID", "") or "")
    if not preamble and not (series_uid and sop_class):
        return NotDicom(
            path, "not DICOM: no preamble, and no SOP Class / Series Instance UID in what parses as a header"
        )
    if not series_uid:
        return NotDicom(path, "it has no SeriesInstanceUID")
    position = _floats(dataset.get("ImagePositionPatient"), 3)
    return DicomHeader(
        path=path,
        sop_class_uid=sop_class,
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "") or ""),
        study_uid=str(dataset.get("StudyInstanceUID", "") or ""),
        series_uid=series_uid,
        patient_id=str(dataset.get("PatientID", "") or ""),
        modality=str(dataset.get("Modality", "") or ""),
        series_description=str(dataset.get("SeriesDescription", "") or ""),
        series_number=_number(dataset.get("SeriesNumber")),
        instance_number=_number(dataset.get("InstanceNumber")),
        position=position,  # type: ignore[arg-type]
        orientation=_floats(dataset.get("ImageOrientationPatient"), 6),
        study_id=_present(dataset, "StudyID"),
        study_date=_present(dataset, "StudyDate"),
        accession_number=_present(dataset, "AccessionNumber"),
        patient_name=str(dataset.get("PatientName", "") or ""),
    )


def _present(dataset: object, keyword: str) -> str | None:
    """An element's value as text, or None when the file lacks it."""
    if keyword not in dataset:  # type: ignore[operator]
        return None
    value = dataset[keyword].value  # type: ignore[index]
    return "" if value is None else str(value)


def _read_chunk(paths: list[str]) -> list[DicomHeader | NotDicom]:
    return [read_header(path) for path in paths]


def read_headers(
    paths: Iterable[Path | str], *, workers: int | None = None, pool: Executor | None = None
) -> Iterator[DicomHeader | NotDicom]:
    """Every file's header, in input order. ``workers``: processes (default: the cores; 1 reads in this process).
    ``pool``: a running pool of ``workers`` processes to use (the planner keeps one for all its cases, so that a
    case of a hundred slices is read in parallel too, without a pool started per case)."""
    files = [str(p) for p in paths]
    workers = workers or os.cpu_count() or 1
    if pool is not None and workers > 1 and len(files) >= 2 * _SMALL_CHUNK:
        size = max(_SMALL_CHUNK, min(_CHUNK, -(-len(files) // (2 * workers))))
        for result in pool.map(_read_chunk, [files[i : i + size] for i in range(0, len(files), size)]):
            yield from result
        return
    if workers == 1 or len(files) <= _CHUNK:
        yield from _read_chunk(files)
        return
    chunks = [files[i : i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    with dicom_pool(workers) as pool:
        for result in pool.map(_read_chunk, chunks):
            yield from result

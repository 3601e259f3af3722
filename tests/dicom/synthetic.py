"""Synthetic DICOM for the tests (pydicom; never real patient data): series with identifying tags, a structured
report, edits of chosen tags."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.imaging import make_dicom_series

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
# What the tests look for in uploaded bytes: the de-identification procedure removes or replaces each.
PATIENT_NAME = "Synthetic^Patient"
PATIENT_ID = "SYN-MRN-0042"


def edit(paths: list[Path], **fields: object) -> None:
    for path in paths:
        dataset = pydicom.dcmread(path)
        for name, value in fields.items():
            setattr(dataset, name, value)
        dataset.save_as(path)


def identified_series(
    directory: Path,
    count: int,
    *,
    modality: str = "CT",
    number: int = 1,
    description: str = "",
    seed: int = 0,
    study_uid: str | None = None,
    rows: int = 8,
    columns: int = 8,
    prefix: str = "",
) -> list[Path]:
    """A series whose every file carries a patient name and ID (what de-identification must take out), written as
    ``<prefix>slice_NNN.dcm`` so that several series can share one folder."""
    built = make_dicom_series(
        directory / f".building-{prefix}{seed}", count, rows=rows, columns=columns, seed=seed, modality=modality
    )
    paths = [p.rename(directory / f"{prefix}{p.name}") for p in built]
    built[0].parent.rmdir()
    fields: dict[str, object] = {
        "PatientName": PATIENT_NAME,
        "PatientID": PATIENT_ID,
        "SeriesNumber": number,
        "SeriesDescription": description,
    }
    if study_uid is not None:
        fields["StudyInstanceUID"] = study_uid
    edit(paths, **fields)
    return paths


def structured_report(path: Path, *, study_uid: str | None = None) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = BASIC_TEXT_SR, meta.MediaStorageSOPInstanceUID
    dataset.SeriesInstanceUID, dataset.StudyInstanceUID = generate_uid(), study_uid or generate_uid()
    dataset.Modality, dataset.SeriesNumber, dataset.PatientID = "SR", 99, PATIENT_ID
    dataset.save_as(str(path), enforce_file_format=True)
    return path

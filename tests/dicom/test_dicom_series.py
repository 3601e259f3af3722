"""DICOM as it leaves a hospital: found by content, grouped into series in slice order, checked as the server checks
an image set, de-identified locally with Grand Challenge's procedure — resumably. Synthetic data only."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from gcbulk.engine.dicom.deidentify import StagingError, stage_set, stage_sets
from gcbulk.engine.dicom.headers import DicomHeader, NotDicom, read_headers
from gcbulk.engine.dicom.series import group_series, image_set_problems, matches, patient_label
from tests.imaging import make_dicom_series

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
REPO = Path(__file__).parents[2]


def _edit(paths: list[Path], **fields: object) -> None:
    for path in paths:
        dataset = pydicom.dcmread(path)
        for name, value in fields.items():
            setattr(dataset, name, value)
        dataset.save_as(path)


def _structured_report(path: Path, series_uid: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = BASIC_TEXT_SR, meta.MediaStorageSOPInstanceUID
    dataset.SeriesInstanceUID, dataset.StudyInstanceUID, dataset.Modality = series_uid, generate_uid(), "SR"
    dataset.PatientID = "EMULATOR-TEST"
    dataset.save_as(str(path), enforce_file_format=True)
    return path


def _headers(folder: Path) -> tuple[list[DicomHeader], list[NotDicom]]:
    found = list(read_headers(sorted(p for p in folder.rglob("*") if p.is_file()), workers=1))
    return [h for h in found if isinstance(h, DicomHeader)], [n for n in found if isinstance(n, NotDicom)]


def test_files_are_found_by_content_not_by_extension(tmp_path: Path) -> None:
    (slice_file,) = make_dicom_series(tmp_path / "export", 1)
    renamed = slice_file.rename(tmp_path / "export" / "IM0001")  # PACS exports often have no extension
    (tmp_path / "export" / "notes.dcm").write_text("not DICOM at all\n")

    headers, others = _headers(tmp_path / "export")

    assert [h.path for h in headers] == [str(renamed)]
    assert [Path(n.path).name for n in others] == ["notes.dcm"]
    assert others[0].reason.startswith("not")


def test_a_folder_with_two_series_and_a_stray_report_is_planned_as_two_series_and_the_report_named(
    tmp_path: Path,
) -> None:
    ct = make_dicom_series(tmp_path / "case" / "a", 5, seed=1)
    mr = make_dicom_series(tmp_path / "case" / "b", 3, seed=2, modality="MR")
    _edit(mr, SeriesNumber=2, SeriesDescription="T2 axial")
    report = _structured_report(tmp_path / "case" / "report.dcm", generate_uid())

    headers, _ = _headers(tmp_path / "case")
    series = group_series(headers)

    assert [s.describe() for s in series] == [
        "CT series 1, 5 files",
        "MR series 2 (T2 axial), 3 files",
        "SR series ?, 1 files",
    ]
    assert [s for s in series if matches(s, {"Modality": "mr", "SeriesDescription": "*axial*"})] == [series[1]]
    (problem,) = image_set_problems(series[2].headers)
    assert problem.code == "dicom-sop-class-rejected" and problem.files == {BASIC_TEXT_SR: (str(report),)}
    assert image_set_problems(series[0].headers) == [] and len(series[0].paths) == len(ct)


def test_slices_are_ordered_by_position_whatever_the_file_names_say(tmp_path: Path) -> None:
    paths = make_dicom_series(tmp_path / "s", 6)
    shuffled = [p.rename(p.with_name(f"x{random.Random(i).randint(0, 10**6)}_{i}.dcm")) for i, p in enumerate(paths)]
    headers, _ = _headers(tmp_path / "s")

    (series,) = group_series(headers)

    assert series.paths == [str(p) for p in shuffled]  # slice_000 (z = 0) first, as written


def test_a_series_with_two_patient_ids_is_refused_with_both_ids_files_named(tmp_path: Path) -> None:
    paths = make_dicom_series(tmp_path / "s", 4)
    _edit(paths[2:], PatientID="OTHER-PATIENT")
    headers, _ = _headers(tmp_path / "s")

    (problem,) = image_set_problems(headers)

    assert problem.code == "dicom-two-patients"
    one, other = patient_label("EMULATOR-TEST"), patient_label("OTHER-PATIENT")
    assert f"{one} in 2 file(s)" in problem.message and f"{other} in 2 file(s)" in problem.message
    assert "OTHER-PATIENT" not in problem.message  # an identifier never goes into a finding
    assert set(problem.files[other]) == {str(p) for p in paths[2:]}


def test_headers_are_read_in_a_process_pool_in_input_order(tmp_path: Path) -> None:
    paths = make_dicom_series(tmp_path / "s", 300, rows=2, columns=2)
    found = list(read_headers(paths, workers=2))
    assert [h.path for h in found] == [str(p) for p in paths]
    assert all(isinstance(h, DicomHeader) for h in found)


def test_de_identification_removes_identifiers_and_keeps_the_set_one_series(tmp_path: Path) -> None:
    paths = make_dicom_series(tmp_path / "s", 4)
    _edit(paths, PatientName="Doe^Jane", PatientID="MRN-123456", InstitutionName="Hospital X")
    original = pydicom.dcmread(paths[0])

    staged = stage_set("case-1", [str(p) for p in paths], tmp_path / "staging")

    assert [f.staged for f in staged.files] == [f"dicom_image_{i}.dcm" for i in range(4)]
    datasets = [pydicom.dcmread(p) for p in staged.paths()]
    for dataset, path in zip(datasets, staged.paths(), strict=True):
        raw = path.read_bytes()
        assert b"Doe^Jane" not in raw and b"MRN-123456" not in raw and b"Hospital X" not in raw
        assert dataset.StudyInstanceUID != original.StudyInstanceUID
    assert len({d.SeriesInstanceUID for d in datasets}) == 1 and len({d.StudyInstanceUID for d in datasets}) == 1
    assert oct((tmp_path / "staging" / "case-1").stat().st_mode & 0o777) == oct(0o700)


def test_staged_copies_and_their_manifest_are_private_and_name_no_source_path(tmp_path: Path) -> None:
    """A PACS export's folder names carry patient names; a run killed before the set reached the server leaves the
    staging behind: only its owner may read it, and the manifest does not say where the files came from."""
    source = tmp_path / "DOE_JANE_MRN-123456"
    paths = [str(p) for p in make_dicom_series(source, 3)]
    old_umask = os.umask(0o022)  # the usual umask, under which a plain open() makes files 0644
    try:
        staged = stage_set("case-1", paths, tmp_path / "staging")
    finally:
        os.umask(old_umask)

    folder = tmp_path / "staging" / "case-1"
    for path in [*staged.paths(), folder / "manifest.json"]:
        assert oct(path.stat().st_mode & 0o777) == oct(0o600), path
    manifest = (folder / "manifest.json").read_text()
    assert "DOE_JANE" not in manifest and str(tmp_path) not in manifest
    assert stage_set("case-1", paths, tmp_path / "staging").reused  # the sources are still known again


def test_a_staged_set_is_reused_and_a_changed_source_is_staged_again(tmp_path: Path) -> None:
    paths = [str(p) for p in make_dicom_series(tmp_path / "s", 3)]
    first = stage_set("k", paths, tmp_path / "staging")

    again = stage_set("k", paths, tmp_path / "staging")
    assert again.reused and again.files == first.files

    _edit([Path(paths[1])], SeriesDescription="edited after staging")
    os.utime(paths[1], ns=(time.time_ns(), time.time_ns() + 10**9))
    redone = stage_set("k", paths, tmp_path / "staging")
    assert not redone.reused and redone.files[1].source_mtime_ns != first.files[1].source_mtime_ns


def test_a_file_the_de_identifier_rejects_fails_its_set_by_name(tmp_path: Path) -> None:
    report = _structured_report(tmp_path / "report.dcm", generate_uid())
    with pytest.raises(StagingError, match="report.dcm: Grand Challenge's de-identifier rejects it"):
        stage_set("k", [str(report)], tmp_path / "staging")
    assert not list((tmp_path / "staging").iterdir())  # nothing half-staged left behind


def test_a_set_over_the_staging_budget_is_an_error_and_the_others_are_staged(tmp_path: Path) -> None:
    small = [str(p) for p in make_dicom_series(tmp_path / "a", 2, rows=4, columns=4)]
    large = [str(p) for p in make_dicom_series(tmp_path / "b", 8, rows=64, columns=64)]
    results = list(
        stage_sets(
            [("big", large), ("small", small)],
            tmp_path / "staging",
            budget_bytes=sum(os.stat(p).st_size for p in small) * 4,
            workers=1,
        )
    )
    assert isinstance(results[0], StagingError) and "more than the staging budget" in str(results[0])
    assert results[1].key == "small" and len(results[1].files) == 2


def test_kill_9_during_de_identification_resumes_to_a_whole_consistent_set(tmp_path: Path) -> None:
    paths = [str(p) for p in make_dicom_series(tmp_path / "s", 120, rows=32, columns=32)]
    script = (
        "import sys; from pathlib import Path; from gcbulk.engine.dicom.deidentify import stage_set; "
        "stage_set('case', sys.argv[2:], Path(sys.argv[1]))"
    )
    for delay in (0.2, 0.5):
        child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "staging"), *paths], cwd=REPO)
        time.sleep(delay)  # a moment somewhere inside the import or the set: the assertions hold for any
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)

    staged = stage_set("case", paths, tmp_path / "staging")

    assert len(staged.files) == 120 and not (tmp_path / "staging" / "case.partial").exists()
    series = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in staged.paths()}
    assert len(series) == 1

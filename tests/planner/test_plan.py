"""The planner: case trees on disk → planned cases, items and files."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from gcbulk.engine.jobfile import load_job
from gcbulk.engine.plan.planner import PlannedCase, plan_tree
from tests.planner.conftest import plan, put, write_job


def _items(case: PlannedCase) -> dict[str, list[str]]:
    return {item.socket_slug: [f.name for f in item.files] for item in case.items}


def write_dicom(path: Path, series_uid: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = "anon"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_tutorial_layout_maps_first_file_to_ct_and_second_to_segmentation(tutorial) -> None:
    cases, findings = plan(tutorial)
    assert findings == []
    assert [(c.title, c.folder, _items(c)) for c in cases] == [
        ("patient1", "patient1", {"ct-image": ["ct.mha"]}),
        ("patient2", "patient2", {"ct-image": ["ct.mhd", "ct.zraw"], "airway-segmentation": ["seg.mha"]}),
    ]
    ct = cases[1].items[0].files[1]
    assert (ct.path, ct.size) == ("patient2/ct.zraw", 32)
    assert ct.mtime_ns == (tutorial.case_root / "patient2" / "ct.zraw").stat().st_mtime_ns


def test_mhd_keeps_the_data_file_its_header_names(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "image.mhd", content=b"NDims = 3\nElementDataFile = pixels.raw\n")
    put(cases_dir / "p1" / "pixels.raw", 64)
    put(cases_dir / "p2" / "local.mhd", content=b"NDims = 3\nElementDataFile = LOCAL\n")
    cases, findings = plan(load_job(write_job(job_dir)))
    # Positions took differently named files (image.mhd, local.mhd): rightly a warning, and nothing else.
    assert [f.code for f in findings] == ["position-names-differ"]
    assert [_items(c) for c in cases] == [{"ct-image": ["image.mhd", "pixels.raw"]}, {"ct-image": ["local.mhd"]}]


def test_glob_and_regex_rules_with_paths_inside_the_case(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "scans" / "ct.mha")
    put(cases_dir / "p1" / "masks" / "airway.nii.gz")
    put(cases_dir / "p1" / "report.pdf")
    rules = """
[[rules]]
glob = "scans/*.mha"
socket = "ct-image"

[[rules]]
regex = 'masks/.*\\.nii\\.gz'
socket = "airway-segmentation"

[[rules]]
glob = "*.pdf"
socket = "report-pdf"
"""
    cases, findings = plan(load_job(write_job(job_dir, rules=rules)))
    assert findings == []
    assert _items(cases[0]) == {
        "ct-image": ["ct.mha"],
        "airway-segmentation": ["airway.nii.gz"],
        "report-pdf": ["report.pdf"],
    }
    assert cases[0].items[1].files[0].path == "p1/masks/airway.nii.gz"


def test_pattern_rules_take_files_before_positions_are_counted(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "a_notes.pdf")
    put(cases_dir / "p1" / "b_ct.mha")
    put(cases_dir / "p1" / "c_seg.mha")
    rules = '[[rules]]\nglob = "*.pdf"\nsocket = "report-pdf"\n' + (
        '[[rules]]\nposition = 1\nsocket = "ct-image"\n[[rules]]\nposition = 2\nsocket = "airway-segmentation"\n'
    )
    cases, _ = plan(load_job(write_job(job_dir, rules=rules)))
    assert _items(cases[0]) == {
        "report-pdf": ["a_notes.pdf"],
        "ct-image": ["b_ct.mha"],
        "airway-segmentation": ["c_seg.mha"],
    }


def test_json_values_from_files_and_from_the_job(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha")
    put(cases_dir / "p1" / "age.json", content=b' { "years" : 63 } ')
    rules = '[[rules]]\nglob = "age.json"\nsocket = "patient-age"\nvalue = true\n' + (
        '[[rules]]\nglob = "*.mha"\nsocket = "ct-image"\n'
    )
    config = load_job(write_job(job_dir, rules=rules, values='"clinical-notes" = { source = "scanner A" }'))
    cases, findings = plan(config)
    assert findings == []
    values = {item.socket_slug: (item.value_json, item.value_path) for item in cases[0].items}
    assert values == {
        "patient-age": ('{"years":63}', "p1/age.json"),
        "ct-image": (None, None),
        "clinical-notes": ('{"source":"scanner A"}', None),
    }


def test_dicom_files_are_grouped_by_series_reading_headers_only(job_dir: Path, cases_dir: Path) -> None:
    series = generate_uid()
    for n in range(3):
        write_dicom(cases_dir / "p1" / "series" / f"slice{n}.dcm", series)
    rules = '[[rules]]\nglob = "*.dcm"\nsocket = "generic-medical-image"\ngroup = "dicom-series"\n'
    cases, findings = plan(load_job(write_job(job_dir, rules=rules)))
    assert findings == []
    assert _items(cases[0]) == {"generic-medical-image": ["slice0.dcm", "slice1.dcm", "slice2.dcm"]}


def test_group_all_makes_one_value_of_every_matching_file(job_dir: Path, cases_dir: Path) -> None:
    for n in range(3):
        put(cases_dir / "p1" / f"tile{n}.tif")
    rules = '[[rules]]\nglob = "*.tif"\nsocket = "generic-medical-image"\ngroup = "all"\n'
    cases, findings = plan(load_job(write_job(job_dir, rules=rules)))
    assert findings == []
    assert _items(cases[0]) == {"generic-medical-image": ["tile0.tif", "tile1.tif", "tile2.tif"]}


def test_cases_at_depth_two_with_a_title_from_the_path(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "site-a" / "p1" / "ct.mha")
    put(cases_dir / "site-b" / "p1" / "ct.mha")
    config = load_job(write_job(job_dir, cases='depth = 2\ntitle = "{parent}-{folder}"'))
    cases, findings = plan(config)
    assert findings == []
    assert [(c.title, c.folder) for c in cases] == [("site-a-p1", "site-a/p1"), ("site-b-p1", "site-b/p1")]


def test_the_walk_streams_one_case_at_a_time(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "a" / "ct.mha")
    put(cases_dir / "b" / "ct.mha")
    stream = plan_tree(load_job(write_job(job_dir)))
    first = next(stream)
    assert isinstance(first, PlannedCase) and first.title == "a"
    # A file added to a later case folder after the first case was yielded is still seen: each case folder is read
    # only when the walk gets there.
    put(cases_dir / "b" / "seg.mha")
    second = next(stream)
    assert isinstance(second, PlannedCase)
    assert _items(second) == {"ct-image": ["ct.mha"], "airway-segmentation": ["seg.mha"]}
    assert list(stream) == []


def test_symlinked_case_folder_is_followed(job_dir: Path, cases_dir: Path, tmp_path: Path) -> None:
    put(tmp_path / "elsewhere" / "ct.mha")
    (cases_dir / "p1").symlink_to(tmp_path / "elsewhere")
    cases, findings = plan(load_job(write_job(job_dir)))
    assert findings == []
    assert _items(cases[0]) == {"ct-image": ["ct.mha"]}

"""The server's own checks of file content, made by ``gcbulk plan`` before a byte leaves (docs/gc-api.md §10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from gcbulk.engine.cli import main
from gcbulk.engine.plan import content
from tests.imaging import make_mha
from tests.planner.conftest import put, write_job

SOCKETS = [
    {"slug": "ct-image", "kind": "Image", "super_kind": "Image"},
    {
        "slug": "airway-segmentation",
        "kind": "Segmentation",
        "super_kind": "Image",
        "overlay_segments": [
            {"name": "background", "voxel_value": 0, "visible": False},
            {"name": "airway", "voxel_value": 1, "visible": True},
        ],
    },
    {"slug": "lesions", "kind": "Multiple points", "super_kind": "File", "relative_path": "lesions.json"},
    {"slug": "patient-age", "kind": "Integer", "super_kind": "Value"},
]
RULES = """
[[rules]]
glob = "ct.mha"
socket = "ct-image"

[[rules]]
glob = "seg.mha"
socket = "airway-segmentation"

[[rules]]
glob = "lesions.json"
socket = "lesions"

[[rules]]
glob = "age.json"
socket = "patient-age"
value = true
"""


def _mask(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))


def _plan(
    job_dir: Path, capsys: pytest.CaptureFixture, *extra: str, catalogue: list[dict] = SOCKETS
) -> tuple[int, str]:
    sockets = job_dir / "sockets.json"
    sockets.write_text(json.dumps({"count": len(catalogue), "results": catalogue}))
    code = main(["plan", str(write_job(job_dir, rules=RULES)), "--offline", "--sockets", str(sockets), *extra])
    return code, capsys.readouterr().out


@pytest.fixture
def clean_case(cases_dir: Path) -> Path:
    folder = cases_dir / "p1"
    make_mha(folder / "ct.mha", (2, 4, 4))
    _mask(folder / "seg.mha", np.array([[[0, 1], [1, 0]]], dtype=np.uint8))
    put(
        folder / "lesions.json",
        content=json.dumps(
            {"version": {"major": 1, "minor": 0}, "type": "Multiple points", "points": [{"point": [1, 2, 3]}]}
        ).encode(),
    )
    put(folder / "age.json", content=b"63")
    return folder


def test_a_clean_case_passes_every_content_check(
    job_dir: Path, clean_case: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out = _plan(job_dir, capsys)
    assert code == 0, out
    assert "BLOCKING" not in out


def test_a_mask_with_values_outside_the_overlay_blocks_its_case_naming_file_and_values(
    job_dir: Path, clean_case: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = cases_dir / "p2" / "seg.mha"
    make_mha(cases_dir / "p2" / "ct.mha", (2, 4, 4))
    _mask(bad, np.array([[[0, 1], [3, 7]]], dtype=np.uint8))
    code, out = _plan(job_dir, capsys)
    assert code == 1
    assert f"BLOCKING [bad-segmentation] {bad}" in out
    assert (
        "segmentation for socket 'airway-segmentation' would be refused by Grand Challenge: the valid voxel values "
        "for this segmentation are {0, 1}; it contains the voxel values {3, 7}"
    ) in out
    assert "Blocked cases (1):\n  p2\n" in out


def test_a_signed_8_bit_mask_reports_its_negative_values(
    job_dir: Path, clean_case: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = cases_dir / "p2" / "seg.mha"
    make_mha(cases_dir / "p2" / "ct.mha", (2, 4, 4))
    _mask(bad, np.array([[[0, 1], [-3, 1]]], dtype=np.int8))
    code, out = _plan(job_dir, capsys)
    assert code == 1
    assert "it contains the voxel values {-3}" in out


def test_a_16_bit_or_many_valued_mask_is_refused_before_upload(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    make_mha(cases_dir / "p1" / "ct.mha", (2, 4, 4))
    _mask(cases_dir / "p1" / "seg.mha", np.zeros((2, 4, 4), dtype=np.uint16))
    make_mha(cases_dir / "p2" / "ct.mha", (2, 4, 4))
    _mask(cases_dir / "p2" / "seg.mha", np.arange(100, dtype=np.uint8).reshape(1, 10, 10))
    code, out = _plan(job_dir, capsys)
    assert code == 1
    assert "its voxels are 16-bit unsigned integer; a segmentation is 8-bit integer (uint8 or int8)" in out
    assert "it has 100 distinct voxel values; at most 64 are allowed" in out
    assert "contains the voxel values {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, … (98 in all)}" in out


def test_a_large_mask_is_read_in_slabs_and_still_checked(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(content, "STREAM_VOXELS", 16)  # 4 x 4 x 6 voxels: read one 4 x 4 slice at a time
    make_mha(cases_dir / "p1" / "ct.mha", (2, 4, 4))
    values = np.zeros((6, 4, 4), dtype=np.uint8)
    values[5, 3, 3] = 9  # only in the last slab
    _mask(cases_dir / "p1" / "seg.mha", values)
    code, out = _plan(job_dir, capsys)
    assert code == 1 and "it contains the voxel values {9}" in out


def test_an_image_the_importer_cannot_read_is_a_finding(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = put(cases_dir / "p1" / "ct.mha", content=b"not an image at all\n")
    code, out = _plan(job_dir, capsys)
    assert code == 1
    assert f"BLOCKING [unreadable-image] {bad}" in out
    assert "image for socket 'ct-image' cannot be read by the importer" in out


def test_json_values_and_json_files_are_checked_against_their_kinds_schema(
    job_dir: Path, clean_case: Path, capsys: pytest.CaptureFixture
) -> None:
    (clean_case / "age.json").write_text('"sixty-three"')
    (clean_case / "lesions.json").write_text(
        json.dumps({"version": {"major": 1, "minor": 0}, "type": "Multiple points", "points": [{"point": [1, 2]}]})
    )
    code, out = _plan(job_dir, capsys)
    assert code == 1
    assert (
        "the value for socket 'patient-age' does not fit its kind 'Integer': the value: 'sixty-three' is not of "
        "type 'integer'"
    ) in out
    assert (
        "the value for socket 'lesions' does not fit its kind 'Multiple points': points/0/point: [1, 2] is too short"
        in out
    )
    assert f"BLOCKING [schema-mismatch] {clean_case / 'lesions.json'}" in out


def test_content_checks_can_be_skipped(job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture) -> None:
    put(cases_dir / "p1" / "ct.mha", content=b"not an image at all\n")
    code, out = _plan(job_dir, capsys, "--no-content-checks")
    assert code == 0, out


def test_a_sockets_file_that_is_not_a_list_of_sockets_exits_2(
    job_dir: Path, clean_case: Path, capsys: pytest.CaptureFixture
) -> None:
    sockets = job_dir / "sockets.json"
    sockets.write_text('{"ct-image": "Image"}')
    assert main(["plan", str(write_job(job_dir, rules=RULES)), "--offline", "--sockets", str(sockets)]) == 2
    assert f'--sockets {sockets} must hold a list of sockets, each with a "slug"' in capsys.readouterr().err


def test_a_replan_reads_no_unchanged_file_and_reads_a_changed_one_again(
    job_dir: Path, clean_case: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    make_mha(cases_dir / "p2" / "ct.mha", (2, 4, 4))
    _mask(cases_dir / "p2" / "seg.mha", np.array([[[0, 1], [1, 1]]], dtype=np.uint8))
    code, out = _plan(job_dir, capsys)
    assert code == 0, out
    # p1's ct.mha, seg.mha and lesions.json and p2's images are read; age.json is a value, checked from the plan.
    assert "content checks: 5 files read · 0 unchanged since their last check (not read again)" in out

    code, out = _plan(job_dir, capsys)
    assert code == 0, out
    assert "content checks: 0 files read · 5 unchanged since their last check (not read again)" in out

    # A mask rewritten with a value outside the overlay: read again, and its finding is the new content's.
    bad = cases_dir / "p2" / "seg.mha"
    _mask(bad, np.array([[[0, 1], [5, 1]]], dtype=np.uint8))
    code, out = _plan(job_dir, capsys)
    assert code == 1
    assert "content checks: 1 files read · 4 unchanged since their last check (not read again)" in out
    assert f"BLOCKING [bad-segmentation] {bad}" in out and "it contains the voxel values {5}" in out

    # The finding is remembered with the file: the next plan repeats it without reading the file.
    code, out = _plan(job_dir, capsys)
    assert code == 1
    assert "content checks: 0 files read · 5 unchanged since their last check (not read again)" in out
    assert f"BLOCKING [bad-segmentation] {bad}" in out


def test_a_mask_off_its_images_grid_is_still_found_when_both_come_from_the_ledger(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    make_mha(cases_dir / "p1" / "ct.mha", (2, 4, 4))
    _mask(cases_dir / "p1" / "seg.mha", np.zeros((3, 4, 4), dtype=np.uint8))
    first = _plan(job_dir, capsys)[1]
    second = _plan(job_dir, capsys)[1]
    assert "content checks: 0 files read · 2 unchanged" in second
    assert "[grid-mismatch]" in first and "[grid-mismatch]" in second


def test_a_socket_whose_overlay_values_changed_has_its_masks_checked_again(
    job_dir: Path, clean_case: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _plan(job_dir, capsys)[0] == 0
    # The study's segmentation socket no longer allows voxel value 1: p1's mask is now refused by the server.
    narrowed = [
        {**s, "overlay_segments": [{"name": "background", "voxel_value": 0, "visible": False}]}
        if s["slug"] == "airway-segmentation"
        else s
        for s in SOCKETS
    ]
    code, out = _plan(job_dir, capsys, catalogue=narrowed)
    assert code == 1
    assert "content checks: 1 files read · 2 unchanged since their last check (not read again)" in out
    assert f"BLOCKING [bad-segmentation] {clean_case / 'seg.mha'}" in out

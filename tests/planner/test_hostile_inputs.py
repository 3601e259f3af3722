"""Case trees made to hurt the planner (issue 24): compression bombs, headers that lie, links out of a case or onto
another case, names that drive the terminal, titles the server would merge. Each is refused (or ignored) by
``gcbulk plan`` before a byte leaves, with a finding that says why; the other cases still plan."""

from __future__ import annotations

import gzip
import json
import os
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from hypothesis import given, settings
from hypothesis import strategies as st

from gcbulk.engine.cli import main
from gcbulk.engine.plan import content
from gcbulk.engine.plan.cases import PlannedFile, PlannedItem
from gcbulk.engine.plan.findings import name_trouble, shown
from gcbulk.engine.plan.metaimage import ReadBudget
from tests.imaging import make_dicom_series, make_mask, make_mha, make_mhd_zraw
from tests.planner.conftest import put, write_job
from tests.planner.hostile_files import metaimage_header, write_bomb_mha

GiB = 1024**3
SOCKETS = [
    {"slug": "ct-image", "kind": "Image", "super_kind": "Image"},
    {
        "slug": "airway-segmentation",
        "kind": "Segmentation",
        "super_kind": "Image",
        "overlay_segments": [{"name": "airway", "voxel_value": 1, "visible": True}],
    },
]
RULES = """
[[rules]]
glob = "ct.*"
socket = "ct-image"

[[rules]]
glob = "seg.mha"
socket = "airway-segmentation"
"""


def _plan(job_dir: Path, capsys: pytest.CaptureFixture, *extra: str, rules: str = RULES) -> tuple[int, str]:
    sockets = job_dir / "sockets.json"
    sockets.write_text(json.dumps({"count": len(SOCKETS), "results": SOCKETS}))
    code = main(["plan", str(write_job(job_dir, rules=rules)), "--offline", "--sockets", str(sockets), *extra])
    return code, capsys.readouterr().out


def _good_case(folder: Path) -> None:
    make_mha(folder / "ct.mha", (2, 4, 4))
    make_mask(folder / "seg.mha", (2, 4, 4))


# --- bounded work per file ----------------------------------------------------------------------------------------
def test_a_mask_whose_header_claims_16_gib_is_refused_by_the_scan_budget_without_inflating_it(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    _good_case(cases_dir / "p1")
    make_mha(cases_dir / "p2" / "ct.mha", (2, 4, 4))
    bomb = write_bomb_mha(cases_dir / "p2" / "seg.mha", "2048 2048 4096", 16 * GiB)
    assert bomb.stat().st_size < 20 * 1024**2  # a real 16 GiB bomb, 16 MB on disk
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [check-budget] {bomb}" in out
    assert (
        "the content check of the file for socket 'airway-segmentation' stopped: its 17179869184 bytes of voxel "
        f"data are over the scan budget of {ReadBudget().scan_bytes} bytes per file; it was not checked and is not sent"
    ) in out
    assert "Blocked cases (1):\n  p2\n" in out


def test_a_mask_whose_data_inflates_far_beyond_its_header_stops_at_the_header_size(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    make_mha(cases_dir / "p1" / "ct.mha", (8, 8, 8))
    bomb = write_bomb_mha(cases_dir / "p1" / "seg.mha", "8 8 8", 16 * GiB)  # claims 512 bytes, holds 16 GiB
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [unreadable-image] {bomb}" in out
    assert (
        "the compressed voxel data inflates to more than the header's 512 bytes (a compression bomb, or a header "
        "that does not belong to the data); it was not inflated further"
    ) in out


def test_a_scan_over_its_time_budget_is_a_finding_naming_that_budget(cases_dir: Path) -> None:
    seg = write_bomb_mha(cases_dir / "p1" / "seg.mha", "1024 1024 64", 64 * 1024**2)
    checker = content.ContentChecker({s["slug"]: s for s in SOCKETS}, budget=ReadBudget(seconds=0))
    item = PlannedItem("airway-segmentation", files=(PlannedFile("p1/seg.mha", "seg.mha", seg.stat().st_size, 0),))
    [found] = checker.check(item, str(cases_dir), str(cases_dir / "p1"), "p1")
    assert found.code == "check-budget" and found.blocking
    assert "scanning its voxels took over the time budget of 0 s per file" in found.message


def test_a_compressed_mask_is_scanned_in_one_streamed_pass_and_its_values_still_checked(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    make_mha(cases_dir / "p1" / "ct.mha", (40, 64, 64))
    values = np.zeros((40, 64, 64), dtype=np.uint8)
    values[39, 63, 63] = 9  # only in the last bytes of the stream
    seg = cases_dir / "p1" / "seg.mha"
    sitk.WriteImage(sitk.GetImageFromArray(values), str(seg), useCompression=True)
    code, out = _plan(job_dir, capsys)
    assert code == 1
    assert "it contains the voxel values {9}" in out


def test_a_json_file_over_its_budget_is_not_parsed(cases_dir: Path) -> None:
    lesions = put(cases_dir / "p1" / "lesions.json", content=b'{"type": "Multiple points", "points": []}' + b" " * 200)
    socket = {"slug": "lesions", "kind": "Multiple points", "super_kind": "File", "relative_path": "lesions.json"}
    checker = content.ContentChecker({"lesions": socket}, budget=ReadBudget(json_bytes=100))
    item = PlannedItem("lesions", files=(PlannedFile("p1/lesions.json", "lesions.json", lesions.stat().st_size, 0),))
    [found] = checker.check(item, str(cases_dir), str(cases_dir / "p1"), "p1")
    assert found.code == "check-budget" and found.blocking
    assert "the JSON file has 241 bytes, over the budget of 100 bytes per file" in found.message


def test_a_metaimage_header_that_does_not_end_within_64_kib_is_refused(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    endless = put(cases_dir / "p1" / "ct.mha", content=b"ObjectType = Image\nComment = " + b"x" * 70_000 + b"\n")
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [bad-image-header] {endless}" in out
    assert "no ElementDataFile line within the first 65536 bytes (the header budget)" in out


@pytest.mark.parametrize("compressed", [False, True])
def test_a_header_claiming_10_to_the_12_voxels_gets_its_real_reason(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture, compressed: bool
) -> None:
    _good_case(cases_dir / "p1")
    liar = put(
        cases_dir / "p2" / "ct.mha",
        content=metaimage_header("10000 10000 10000", compressed=compressed) + bytes(100),
    )
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [bad-image-header] {liar}" in out
    claim = "the header claims 1000000000000 voxels × 1 bytes = 1000000000000 bytes"
    if compressed:
        assert f"{claim}, more than the 100 compressed bytes in the file can hold (zlib inflates at most 1032:1)" in out
    else:
        assert f"{claim}, but the file holds 100 bytes of voxel data" in out
    assert "No such file or directory" not in out
    assert "Blocked cases (1):\n  p2\n" in out


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_nifti_header_claiming_more_voxels_than_its_file_holds_is_refused(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture, suffix: str
) -> None:
    _good_case(cases_dir / "p1")
    liar = cases_dir / "p2" / f"ct{suffix}"
    liar.parent.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16)), str(liar))
    header = bytearray(gzip.decompress(liar.read_bytes()) if suffix == ".nii.gz" else liar.read_bytes())
    header[40:56] = struct.pack("<8h", 3, 10000, 10000, 10000, 1, 1, 1, 1)  # NIfTI-1 dim[]: 10^12 voxels
    liar.write_bytes(gzip.compress(bytes(header)) if suffix == ".nii.gz" else bytes(header))
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [bad-image-header] {liar}" in out
    assert "the header claims 1000000000000 voxels, 2000000000000 bytes of voxel data, more than the file's" in out


# --- refused before upload ----------------------------------------------------------------------------------------
def test_a_negative_dimsize_is_refused_at_plan_time(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = put(cases_dir / "p1" / "ct.mha", content=metaimage_header("-1 8 8") + bytes(64))
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [bad-image-header] {bad}" in out
    assert "DimSize = -1 8 8 has a size that is zero or negative; every size must be positive" in out


def test_a_4d_segmentation_is_refused_at_plan_time(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    make_mha(cases_dir / "p1" / "ct.mha", (2, 4, 4))
    seg = cases_dir / "p1" / "seg.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 2, 4, 4), dtype=np.uint8), isVector=False), str(seg))
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [bad-segmentation] {seg}" in out
    assert "it has 4 dimensions; a segmentation is 2-D or 3-D" in out


def test_a_segmentation_off_its_ct_grid_is_a_warning_naming_both_files(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    make_mha(cases_dir / "p1" / "ct.mha", (2, 4, 4))
    make_mha(cases_dir / "p2" / "ct.mha", (2, 4, 4))
    make_mask(cases_dir / "p1" / "seg.mha", (2, 4, 4))  # same grid: no word
    image = sitk.GetImageFromArray(np.zeros((2, 4, 4), dtype=np.uint8))
    image.SetSpacing((1.0, 1.0, 3.0))
    image.SetOrigin((0.0, 0.0, -10.0))
    sitk.WriteImage(image, str(cases_dir / "p2" / "seg.mha"))
    code, out = _plan(job_dir, capsys)
    assert code == 0, out
    assert out.count("[grid-mismatch]") == 1
    assert f"WARNING [grid-mismatch] {cases_dir / 'p2' / 'seg.mha'}" in out
    assert (
        "segmentation 'p2/seg.mha' (socket 'airway-segmentation') does not lie on the grid of image 'p2/ct.mha' "
        "(socket 'ct-image') in the same case: spacing [1, 1, 3] against [0.5, 0.75, 1.25]; origin [0, 0, -10] "
        "against [0, 0, 0]"
    ) in out


# --- nothing outside the case ---------------------------------------------------------------------------------------
def test_an_mha_naming_a_data_file_elsewhere_is_refused(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    _good_case(cases_dir / "p1")
    bad = put(cases_dir / "p2" / "ct.mha", content=metaimage_header("8 8 8", ElementDataFile="../../x"))
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [mha-data-elsewhere] {bad}" in out
    assert ".mha header names data file '../../x' (ElementDataFile); an .mha is sent alone" in out


def test_an_mhd_whose_raw_file_links_out_of_the_case_is_refused_and_never_read(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    secret = put(job_dir / "elsewhere" / "secret.raw", 5000)
    put(cases_dir / "p1" / "ct.mhd", content=metaimage_header("8 8 16", ElementDataFile="ct.raw"))
    (cases_dir / "p1" / "ct.raw").symlink_to(secret)
    _good_case(cases_dir / "p2")
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [companion-outside] {cases_dir / 'p1' / 'ct.mhd'}" in out
    assert ".mhd header names data file 'ct.raw', which points outside the case folder" in out
    assert "Blocked cases (1):\n  p1\n" in out


def test_an_mhd_whose_raw_file_is_not_the_size_its_header_says_is_refused(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    put(cases_dir / "p1" / "ct.mhd", content=metaimage_header("8 8 16", ElementDataFile="ct.raw"))
    put(cases_dir / "p1" / "ct.raw", 5000)
    header, _ = make_mhd_zraw(cases_dir / "p2" / "ct.mhd", (4, 8, 8))  # a real pair: no word
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [bad-image-header] {cases_dir / 'p1' / 'ct.mhd'}" in out
    assert "the header claims 1024 voxels × 1 bytes = 1024 bytes, but its data file 'ct.raw' holds 5000 bytes" in out
    assert str(header) not in out


def test_an_image_that_links_out_of_its_case_is_refused_and_a_link_no_rule_uses_is_ignored(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    outside = make_mha(job_dir / "elsewhere" / "ct.mha", (2, 4, 4))
    (cases_dir / "p1").mkdir()
    (cases_dir / "p1" / "ct.mha").symlink_to(outside)
    _good_case(cases_dir / "p2")
    (cases_dir / "p2" / "notes.txt").symlink_to(job_dir / "elsewhere" / "gone.txt")  # broken, unused
    (cases_dir / "p2" / "loop").symlink_to(cases_dir / "p2" / "loop")  # a loop nobody uses
    (cases_dir / "p2" / "readme").symlink_to(outside)  # leads out, but no rule takes it
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert f"BLOCKING [link-outside-case] {cases_dir / 'p1' / 'ct.mha'}" in out
    assert "file is a symbolic link to a file outside its case folder" in out
    assert "p2/notes.txt" not in out and "p2/loop" not in out and "p2/readme" not in out
    assert "Blocked cases (1):\n  p1\n" in out


def test_a_dicom_instance_that_links_out_of_the_case_blocks_it(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    make_dicom_series(cases_dir / "p1", 3)
    elsewhere = make_dicom_series(job_dir / "elsewhere", 1, seed=4)[0]
    (cases_dir / "p1" / "slice_zzz.dcm").symlink_to(elsewhere)
    rules = '[[rules]]\ndicom = { Modality = "CT" }\nsocket = "ct-image"\n'
    code, out = _plan(job_dir, capsys, rules=rules)
    assert code == 1, out
    assert f"BLOCKING [link-outside-case] {cases_dir / 'p1' / 'slice_zzz.dcm'}" in out
    assert "Blocked cases (1):\n  p1\n" in out


# --- one case per real folder ---------------------------------------------------------------------------------------
def test_an_alias_link_never_displaces_the_case_it_points_at(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    _good_case(cases_dir / "patient001")
    code, out = _plan(job_dir, capsys)
    assert code == 0, out
    (cases_dir / "aa_backup_link").symlink_to(cases_dir / "patient001")  # sorts before the real folder
    code, out = _plan(job_dir, capsys, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["plan"]["new_cases"] == 0 and report["plan"]["removed"] == []
    [alias] = [f for f in report["findings"] if f["code"] == "case-alias"]
    assert alias["path"] == str(cases_dir / "aa_backup_link") and alias["severity"] == "warning"
    assert [row["title"] for row in report["cases"]] == ["patient001"]


# --- names as the server sees them ----------------------------------------------------------------------------------
def test_names_with_escape_sequences_or_bidi_overrides_are_blocked_and_shown_escaped(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    _good_case(cases_dir / "p1")
    _good_case(cases_dir / "clear\x1b[2Jscreen")
    _good_case(cases_dir / "abc\u202egpj.exe")
    make_mha(cases_dir / "p4" / "ct.mha", (2, 4, 4))
    make_mask(cases_dir / "p4" / "seg\x07.mha", (2, 4, 4))
    code, out = _plan(job_dir, capsys, rules=RULES.replace('"seg.mha"', '"seg*.mha"'))
    assert code == 1, out
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert (
        "case folder name contains control characters (such as ESC, which a terminal runs as a command) (shown "
        "escaped: clear\\x1b[2Jscreen)" in out
    )
    assert "case folder name contains a bidirectional control character (U+202E)" in out
    assert "abc\\u202egpj.exe" in out
    assert f"BLOCKING [bad-name] {cases_dir / 'p4'}/seg\\x07.mha" in out
    assert "Blocked cases (3):\n  abc\\u202egpj.exe\n  clear\\x1b[2Jscreen\n  p4\n" in out


@pytest.mark.parametrize(
    ("first", "second"),
    [("dup", "dup "), (unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café"))],
    ids=["trailing-space", "nfc-nfd"],
)
def test_titles_the_server_would_merge_collide_at_plan_time(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture, first: str, second: str
) -> None:
    assert first != second
    _good_case(cases_dir / first)
    _good_case(cases_dir / second)
    code, out = _plan(job_dir, capsys)
    assert code == 1, out
    assert out.count("[duplicate-title]") == 1
    assert (
        "is already used by another case folder (as the server compares titles: surrounding spaces removed, "
        "Unicode NFC)" in out
    )


def test_os_litter_is_ignored_without_a_word(job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture) -> None:
    _good_case(cases_dir / "p1")
    for litter in (".DS_Store", "Thumbs.db", "._ct.mha", "._seg.mha"):
        put(cases_dir / "p1" / litter)
    put(cases_dir / ".DS_Store")
    code, out = _plan(job_dir, capsys, rules=RULES.replace('"ct.*"', '"*ct.mha"'))
    assert code == 0, out
    assert "WARNING" not in out and "INFO" not in out and "DS_Store" not in out
    assert "cases 1 · files 2" in out


def test_a_case_reached_through_an_untrusted_folder_name_is_not_read_outside_its_folder(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """A folder link inside a case that leads out of it is not followed: nothing under it is read or sent."""
    put(job_dir / "elsewhere" / "series" / "ct.mha", content=b"would be sent")
    _good_case(cases_dir / "p1")
    (cases_dir / "p1" / "more").symlink_to(job_dir / "elsewhere" / "series")
    code, out = _plan(job_dir, capsys, rules=RULES + '\n[[rules]]\nglob = "more/*"\nsocket = "ct-image"\n')
    assert code == 0, out
    assert f"WARNING [link-outside-case] {cases_dir / 'p1' / 'more'}" in out
    assert "folder is a symbolic link to a folder outside its case folder; it is not followed" in out
    assert os.path.exists(job_dir / "elsewhere" / "series" / "ct.mha")


_BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@settings(max_examples=300, deadline=None)
@given(text=st.text(), raw=st.binary(max_size=20))
def test_a_shown_name_never_carries_a_control_or_bidi_character_and_always_encodes(text: str, raw: bytes) -> None:
    for name in (text, os.fsdecode(raw)):  # any text, and any bytes a file system may hand over
        out = shown(name)
        out.encode("utf-8")
        assert not any(unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in out)
        assert (out == name) == (name_trouble(name) is None)

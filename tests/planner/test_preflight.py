"""One test per preflight rule: each finding names the path and how to fix it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gcbulk.engine.jobfile import JobConfig, load_job
from gcbulk.engine.plan.findings import shown
from gcbulk.engine.plan.planner import PlannedCase, PlannedFile, PlannedItem
from gcbulk.engine.plan.preflight import Finding, Preflight
from tests.planner.conftest import plan, put, put_mhd, write_job
from tests.planner.test_plan import write_dicom

GiB = 1024**3
TiB = 1024**4
CATALOGUE = {
    "ct-image": {"slug": "ct-image", "super_kind": "Image", "kind": "Image", "relative_path": "images/ct"},
    "airway-segmentation": {
        "slug": "airway-segmentation",
        "super_kind": "Image",
        "kind": "Segmentation",
        "relative_path": "images/airway-segmentation",
    },
    "report-pdf": {"slug": "report-pdf", "super_kind": "File", "kind": "PDF file", "relative_path": "report.pdf"},
    "patient-age": {
        "slug": "patient-age",
        "super_kind": "Value",
        "kind": "Integer",
        "relative_path": "patient-age.json",
    },
}


def _only(findings: list[Finding], code: str) -> Finding:
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, findings
    return matching[0]


def _check(
    config: JobConfig,
    catalogue=CATALOGUE,
    *,
    check_content: bool = False,
) -> tuple[list[PlannedCase], list[Finding]]:
    """Plan and run the whole preflight, as ``gcbulk plan`` does. The files here are stand-in bytes, so the content
    checks (tests/planner/test_content_checks.py) are off unless asked for."""
    checker = Preflight(config=config, catalogue=catalogue, check_content=check_content)
    findings = checker.check_job()
    cases, walk_findings = plan(config)
    findings += [f for f in walk_findings if f.case is None or not any(f in c.findings for c in cases)]
    checked = [checker.check_case(case) for case in cases]
    for case in checked:
        findings += case.findings
    return checked, findings + checker.finish()


def test_unknown_socket_slug(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha")
    config = load_job(write_job(job_dir, rules='[[rules]]\nposition = 1\nsocket = "ct-imag"\n'))
    _, findings = _check(config)
    finding = _only(findings, "unknown-socket")
    assert finding.blocking
    assert finding.path == str(config.job_file)
    assert "rules[1] (position 1 -> ct-imag): socket 'ct-imag' does not exist on https://gc.example" in finding.message
    assert "correct the slug" in finding.fix


def test_offline_plan_skips_the_socket_check(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha")
    config = load_job(write_job(job_dir, rules='[[rules]]\nposition = 1\nsocket = "ct-imag"\n'))
    _, findings = _check(config, catalogue=None)
    assert findings == []


def test_files_for_a_value_socket_and_a_value_for_an_image_socket(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha")
    config = load_job(
        write_job(job_dir, rules='[[rules]]\nposition = 1\nsocket = "patient-age"\n', values='"ct-image" = 3')
    )
    _, findings = _check(config)
    messages = [f.message for f in findings if f.code == "wrong-socket-kind"]
    assert messages == [
        "rules[1] (position 1 -> patient-age): socket 'patient-age' is a Value socket, but the job gives it files",
        "values.ct-image: socket 'ct-image' is a Image socket, but the job gives it a JSON value",
    ]


def test_socket_kinds_from_the_catalogue_are_kept_on_the_items(tutorial: JobConfig) -> None:
    cases, findings = _check(tutorial)
    assert findings == []
    assert {item.super_kind for case in cases for item in case.items} == {"Image"}


def test_two_file_sets_for_one_socket(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "a.mha")
    put(cases_dir / "p1" / "b.mha")
    config = load_job(write_job(job_dir, rules='[[rules]]\nglob = "*.mha"\nsocket = "ct-image"\n'))
    cases, findings = _check(config)
    finding = _only(findings, "two-file-sets")
    assert finding.blocking and cases[0].blocking
    assert finding.files == ("p1/a.mha", "p1/b.mha")
    assert "socket 'ct-image'" in finding.message and "group" in finding.fix


def test_two_dicom_series_for_one_socket(job_dir: Path, cases_dir: Path) -> None:
    write_dicom(cases_dir / "p1" / "one.dcm", "1.2.3.1")
    write_dicom(cases_dir / "p1" / "two.dcm", "1.2.3.2")
    rules = '[[rules]]\nglob = "*.dcm"\nsocket = "ct-image"\ngroup = "dicom-series"\n'
    _, findings = _check(load_job(write_job(job_dir, rules=rules)))
    assert _only(findings, "two-file-sets").message.startswith("2 separate file sets map to socket 'ct-image'")


def test_non_dicom_file_in_a_dicom_rule(job_dir: Path, cases_dir: Path) -> None:
    write_dicom(cases_dir / "p1" / "one.dcm", "1.2.3.1")
    put(cases_dir / "p1" / "notes.dcm", content=b"not a dicom file at all")
    rules = '[[rules]]\nglob = "*.dcm"\nsocket = "ct-image"\ngroup = "dicom-series"\n'
    cases, findings = _check(load_job(write_job(job_dir, rules=rules)))
    finding = _only(findings, "not-dicom")
    assert finding.files == ("p1/notes.dcm",) and finding.blocking
    assert [f.name for f in cases[0].items[0].files] == ["one.dcm"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("x" * 125 + ".mha", "129 characters, over the limit of 128"),
        ("tab\there.mha", "control characters"),
        ("back\\slash.mha", "backslash"),
    ],
)
def test_file_name_that_cannot_be_an_upload_filename(job_dir: Path, cases_dir: Path, name: str, reason: str) -> None:
    put(cases_dir / "p1" / "ct.mha")
    put(cases_dir / "p1" / name)
    _, findings = _check(load_job(write_job(job_dir)))
    finding = _only(findings, "bad-name")
    assert reason in finding.message and finding.path.endswith(shown(name)) and "rename" in finding.fix


def test_file_name_that_is_not_utf8(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha")
    with open(os.path.join(os.fsencode(cases_dir / "p1"), b"caf\xe9.mha"), "wb") as handle:
        handle.write(b"data")
    _, findings = _check(load_job(write_job(job_dir)))
    assert "not valid UTF-8" in _only(findings, "bad-name").message


def test_empty_case_folder(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha")
    (cases_dir / "p2").mkdir()
    cases, findings = _check(load_job(write_job(job_dir)))
    finding = _only(findings, "empty-case")
    assert finding.path == str(cases_dir / "p2") and not finding.blocking
    assert [c.title for c in cases] == ["p1"]


GLOB_MHA = '[[rules]]\nglob = "*.mha"\nsocket = "ct-image"\ngroup = "all"\n'


def test_unreadable_files(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha")
    (cases_dir / "p1" / "dangling.mha").symlink_to(cases_dir / "gone.mha")
    os.mkfifo(cases_dir / "p1" / "pipe.mha")
    _, findings = _check(load_job(write_job(job_dir, rules=GLOB_MHA)))
    reasons = sorted(f.message for f in findings if f.code == "unreadable")
    assert reasons == [
        "file cannot be read: it is a broken symbolic link",
        "file cannot be read: it is not a regular file",
    ]


def test_a_broken_link_or_link_loop_no_rule_uses_is_ignored_and_blocks_nothing(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha")
    (cases_dir / "p1" / "notes.lnk").symlink_to(cases_dir / "gone.txt")
    (cases_dir / "p1" / "self").symlink_to(cases_dir / "p1" / "self")
    (cases_dir / "p1" / "again").symlink_to(cases_dir / "p1")
    cases, findings = _check(load_job(write_job(job_dir, rules='[[rules]]\nglob = "*.mha"\nsocket = "ct-image"\n')))
    assert findings == []
    assert [f.path for f in cases[0].items[0].files] == ["p1/ct.mha"] and not cases[0].blocking


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_file_without_read_permission(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha").chmod(0)
    _, findings = _check(load_job(write_job(job_dir)))
    assert _only(findings, "unreadable").message == "file cannot be read: permission denied"


def test_symlink_loops_a_rule_would_take_block_their_case(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha")
    (cases_dir / "p1" / "again").symlink_to(cases_dir / "p1")
    (cases_dir / "p1" / "self").symlink_to(cases_dir / "p1" / "self")
    rules = '[[rules]]\nglob = "*.mha"\nsocket = "ct-image"\n[[rules]]\nglob = "again"\nsocket = "x"\n'
    rules += '[[rules]]\nglob = "self"\nsocket = "y"\n'
    cases, findings = _check(load_job(write_job(job_dir, rules=rules)))
    loops = [f for f in findings if f.code == "symlink-loop"]
    assert sorted(Path(f.path).name for f in loops) == ["again", "self"]
    assert all(f.blocking and "remove the link" in f.fix for f in loops)


def test_zero_byte_file(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha", content=b"")
    _, findings = _check(load_job(write_job(job_dir)))
    finding = _only(findings, "zero-bytes")
    assert finding.blocking and finding.files == ("p1/ct.mha",)


def test_more_than_100_files_for_one_image(job_dir: Path, cases_dir: Path) -> None:
    for n in range(101):
        put(cases_dir / "p1" / f"slice{n:03d}.dcm", 4)
    rules = '[[rules]]\nglob = "*.dcm"\nsocket = "ct-image"\ngroup = "all"\n'
    _, findings = _check(load_job(write_job(job_dir, rules=rules)))
    finding = _only(findings, "too-many-files")
    assert "101 files for socket 'ct-image'; one image value takes at most 100" in finding.message
    assert len(finding.files) == 101


def test_several_files_for_a_file_socket(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "a.pdf")
    put(cases_dir / "p1" / "b.pdf")
    rules = '[[rules]]\nglob = "*.pdf"\nsocket = "report-pdf"\ngroup = "all"\n'
    _, findings = _check(load_job(write_job(job_dir, rules=rules)))
    assert "2 files map to file socket 'report-pdf'" in _only(findings, "file-socket-many-files").message


def test_duplicate_titles(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "site-a" / "p1" / "ct.mha")
    put(cases_dir / "site-b" / "p1" / "ct.mha")
    cases, findings = _check(load_job(write_job(job_dir, cases="depth = 2")))
    finding = _only(findings, "duplicate-title")
    assert finding.path == str(cases_dir / "site-b" / "p1") and "{path}" in finding.fix
    assert [c.blocking for c in cases] == [False, True]


def test_file_needing_more_than_10000_parts(job_dir: Path) -> None:
    config = load_job(write_job(job_dir, engine='part_size = "5 MiB"'))
    big = PlannedCase(
        title="p1",
        folder="p1",
        items=(
            PlannedItem(
                socket_slug="ct-image", files=(PlannedFile(path="p1/ct.mha", name="ct.mha", size=60 * GiB, mtime_ns=1),)
            ),
        ),
    )
    checked = Preflight(config=config).check_case(big)
    finding = _only(list(checked.findings), "too-many-parts")
    assert not finding.blocking
    assert "needs 12288 parts (limit 10000); its parts will be 10485760 bytes" in finding.message


def test_file_over_the_s3_object_limit(job_dir: Path) -> None:
    config = load_job(write_job(job_dir))
    huge = PlannedCase(
        title="p1",
        folder="p1",
        items=(
            PlannedItem(
                socket_slug="ct-image", files=(PlannedFile(path="p1/ct.mha", name="ct.mha", size=6 * TiB, mtime_ns=1),)
            ),
        ),
    )
    finding = _only(list(Preflight(config=config).check_case(huge).findings), "too-many-parts")
    assert finding.blocking and "over S3's 5 TiB object limit" in finding.message


def _case_of_size(title: str, size: int) -> PlannedCase:
    files = (PlannedFile(path=f"{title}/ct.mha", name="ct.mha", size=size, mtime_ns=1),)
    return PlannedCase(title=title, folder=title, items=(PlannedItem(socket_slug="ct-image", files=files),))


def test_quota_estimate_against_the_server_limits(job_dir: Path) -> None:
    config = load_job(write_job(job_dir))
    checker = Preflight(config=config)
    big = checker.check_case(_case_of_size("big", 3 * GiB))
    for n in range(2000):
        checker.check_case(_case_of_size(f"p{n}", 1024))
    findings = checker.finish()
    assert (checker.quota.uploads, checker.quota.largest_value_bytes) == (2001, 3 * GiB)
    # The warning names the case and the file that push it over the unverified account's quota.
    [warning] = big.findings
    assert (warning.severity, warning.case, warning.files) == ("warning", "big", ("big/ct.mha",))
    assert f"socket 'ct-image' needs {3 * GiB} bytes of uploads at once (big/ct.mha)" in warning.message
    assert [(f.severity, f.message.split(";")[0]) for f in findings] == [
        (
            "info",
            f"{3 * GiB + 2000 * 1024} bytes in all, more than the upload quota (128 GiB verified, 2 GiB unverified)",
        ),
        ("info", "2001 uploads, more than the server's cap of 2000 live uploads"),
    ]


def test_value_over_the_verified_quota_blocks(job_dir: Path) -> None:
    checker = Preflight(config=load_job(write_job(job_dir)))
    small = checker.check_case(_case_of_size("small", 1024))
    big = checker.check_case(_case_of_size("big", 129 * GiB))
    # Only that case is blocked, and the finding names its file.
    assert not small.blocking and big.blocking
    assert big.findings[0].files == ("big/ct.mha",) and "128 GiB upload quota" in big.findings[0].message
    assert not any(f.blocking for f in checker.finish())


def test_mhd_without_its_data_file(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mhd", content=b"NDims = 3\nElementDataFile = ct.zraw\n")
    put_mhd(cases_dir / "p2", "ct", ".raw")
    cases, findings = _check(load_job(write_job(job_dir)))
    finding = _only(findings, "missing-companion")
    assert finding.files == ("p1/ct.mhd",) and "'ct.zraw'" in finding.message
    assert [c.title for c in cases if not c.blocking] == ["p2"]


def test_mhd_header_without_data_file_line(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mhd", content=b"NDims = 3\n")
    _, findings = _check(load_job(write_job(job_dir)))
    assert "no ElementDataFile line" in _only(findings, "unreadable").message


def test_value_file_that_is_not_json(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "ct.mha")
    put(cases_dir / "p1" / "age.json", content=b"{sixty-three}")
    rules = '[[rules]]\nglob = "*.json"\nsocket = "patient-age"\nvalue = true\n' + (
        '[[rules]]\nglob = "*.mha"\nsocket = "ct-image"\n'
    )
    _, findings = _check(load_job(write_job(job_dir, rules=rules)))
    assert _only(findings, "bad-json").files == ("p1/age.json",)


def test_file_no_rule_maps_and_ignored_files(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "a.mha")
    put(cases_dir / "p1" / "b.mha")
    put(cases_dir / "p1" / "c.mha")
    put(cases_dir / "p1" / ".DS_Store")
    config = load_job(write_job(job_dir, cases='ignore = [".DS_Store"]'))
    _, findings = _check(config)
    assert _only(findings, "unmatched").files == ("p1/c.mha",)
    assert _only(findings, "ignored").severity == "info"


def test_case_folder_where_no_file_matches(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "notes.txt")
    cases, findings = _check(load_job(write_job(job_dir, rules='[[rules]]\nglob = "*.mha"\nsocket = "ct-image"\n')))
    assert cases == []
    assert {f.code for f in findings} == {"unmatched", "nothing-mapped"}


def test_file_outside_any_case_folder(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "README.md")
    put(cases_dir / "p1" / "ct.mha")
    _, findings = _check(load_job(write_job(job_dir)))
    finding = _only(findings, "outside-case")
    assert finding.files == ("README.md",) and not finding.blocking


def test_two_files_with_one_name_in_one_value(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / "p1" / "a" / "slice.dcm")
    put(cases_dir / "p1" / "b" / "slice.dcm")
    rules = '[[rules]]\nglob = "*.dcm"\nsocket = "ct-image"\ngroup = "all"\n'
    _, findings = _check(load_job(write_job(job_dir, rules=rules)))
    assert "two files named 'slice.dcm'" in _only(findings, "duplicate-names").message


def test_title_that_cannot_be_a_display_set_title(job_dir: Path, cases_dir: Path) -> None:
    put(cases_dir / ("p" * 200) / "ct.mha")
    config = load_job(write_job(job_dir, cases='title = "{folder}-{folder}"'))
    _, findings = _check(config)
    assert "has 401 characters, over 255" in _only(findings, "bad-title").message


def test_missing_case_root(job_dir: Path, cases_dir: Path) -> None:
    cases_dir.rmdir()
    _, findings = _check(load_job(write_job(job_dir)))
    assert _only(findings, "case-root-missing").blocking

"""DICOM in the plan: series found by content and mapped by their header fields, what the server would refuse in an
image set blocked before anything is sent, with the files named. Synthetic data only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from gcbulk.engine.dicom.series import identifier_label, patient_label
from gcbulk.engine.jobfile import JobFileError, load_job
from tests.dicom.synthetic import PATIENT_ID, edit, identified_series, structured_report
from tests.planner.conftest import plan, write_job

BY_MODALITY = """
[[rules]]
dicom = { Modality = "CT" }
socket = "ct-image"

[[rules]]
dicom = { Modality = "MR", SeriesDescription = "*t2*" }
socket = "dicom-image-set"
image_name = "{title} {Modality}"
"""


def test_a_folder_with_two_series_and_a_stray_report_is_planned_by_the_rules_and_the_report_reported(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "cases" / "patient1" / "export"
    folder.mkdir(parents=True)
    study = generate_uid()
    ct = identified_series(folder, 4, seed=1, study_uid=study, prefix="a")
    mr = identified_series(
        folder, 3, modality="MR", number=2, description="T2 axial", seed=2, study_uid=study, prefix="b"
    )
    ct_named_oddly = [p.rename(p.with_name(f"IM{9 - i}")) for i, p in enumerate(ct)]  # no extension, reversed
    structured_report(folder / "report.dcm", study_uid=study)

    (case,), findings = plan(load_job(write_job(tmp_path, rules=BY_MODALITY)))

    items = {item.socket_slug: item for item in case.items}
    assert [f.name for f in items["ct-image"].files] == [p.name for p in ct_named_oddly]  # slice order, by content
    assert [f.name for f in items["dicom-image-set"].files] == [p.name for p in mr]
    assert not case.blocking
    (unmapped,) = [f for f in findings if f.code == "dicom-series-unmapped"]
    assert unmapped.files == ("patient1/export/report.dcm",) and "SR series 99" in unmapped.message
    (multi,) = [f for f in findings if f.code == "dicom-multi-series"]
    assert "CT series 1" in multi.message and "MR series 2 (T2 axial)" in multi.message and "SR" in multi.message


def test_a_series_with_two_patient_ids_is_blocked_with_both_ids_files_named(tmp_path: Path) -> None:
    folder = tmp_path / "cases" / "patient1"
    folder.mkdir(parents=True)
    paths = identified_series(folder, 4, seed=3)
    edit(paths[2:], PatientID="OTHER-PATIENT")

    (case,), _ = plan(load_job(write_job(tmp_path, rules=BY_MODALITY)))

    assert case.blocking and case.items == ()
    (blocked,) = case.findings
    assert blocked.code == "dicom-two-patients" and blocked.severity == "blocking"
    assert set(blocked.files) == {f"patient1/{p.name}" for p in paths}
    assert f"{patient_label(PATIENT_ID)}: patient1/slice_000.dcm, patient1/slice_001.dcm" in blocked.message
    assert f"{patient_label('OTHER-PATIENT')}: patient1/slice_002.dcm, patient1/slice_003.dcm" in blocked.message
    assert PATIENT_ID not in blocked.message and "OTHER-PATIENT" not in blocked.message


def test_a_report_mapped_to_an_image_set_is_blocked_as_the_de_identifier_would_reject_it(tmp_path: Path) -> None:
    structured_report(tmp_path / "cases" / "patient1" / "sr.dcm")
    rules = '[[rules]]\ndicom = { Modality = "SR" }\nsocket = "dicom-image-set"\n'

    (case,), _ = plan(load_job(write_job(tmp_path, rules=rules)))

    (blocked,) = case.findings
    assert blocked.code == "dicom-sop-class-rejected" and blocked.files == ("patient1/sr.dcm",)


def test_an_image_name_that_comes_out_empty_blocks_its_case(tmp_path: Path) -> None:
    identified_series(tmp_path / "cases" / "patient1", 2, modality="MR", description="")
    rules = '[[rules]]\ndicom = { Modality = "MR" }\nsocket = "dicom-image-set"\nimage_name = "{SeriesDescription}"\n'
    head = "[dicom]\nallow_phi_titles = true\n"  # SeriesDescription is one de-identification removes

    (case,), _ = plan(load_job(write_job(tmp_path, rules=rules, head=head)))

    (blocked,) = [f for f in case.findings if f.blocking]
    assert blocked.code == "dicom-image-name-empty" and len(blocked.files) == 2


def test_a_case_mixing_studies_is_reported_and_still_planned(tmp_path: Path) -> None:
    identified_series(tmp_path / "cases" / "patient1" / "a", 2, seed=1)
    identified_series(tmp_path / "cases" / "patient1" / "b", 2, modality="MR", description="t2", seed=2)

    (case,), findings = plan(load_job(write_job(tmp_path, rules=BY_MODALITY)))

    assert {i.socket_slug for i in case.items} == {"ct-image", "dicom-image-set"}
    (mixed,) = [f for f in findings if f.code == "dicom-mixed-studies"]
    assert mixed.severity == "warning" and "2 studies" in mixed.message


def test_a_path_glob_narrows_a_dicom_rule_and_old_glob_rules_still_group_series(tmp_path: Path) -> None:
    identified_series(tmp_path / "cases" / "patient1" / "ct", 3, seed=1)
    identified_series(tmp_path / "cases" / "patient1" / "old", 2, seed=2, number=5)
    rules = (
        '[[rules]]\ndicom = { Modality = "CT" }\nglob = "ct/*"\nsocket = "ct-image"\n\n'
        '[[rules]]\nglob = "old/*.dcm"\nsocket = "generic-medical-image"\ngroup = "dicom-series"\n'
    )

    (case,), _ = plan(load_job(write_job(tmp_path, rules=rules)))

    files = {item.socket_slug: [f.path for f in item.files] for item in case.items}
    assert files["ct-image"] == [f"patient1/ct/slice_00{i}.dcm" for i in range(3)]
    assert files["generic-medical-image"] == [f"patient1/old/slice_00{i}.dcm" for i in range(2)]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            'dicom = { Modalty = "CT" }',
            r"rules\[1\]: dicom.Modalty is not a header field gcbulk reads; use one of Modality",
        ),
        ('dicom = "CT"', r"rules\[1\]: dicom must be a table of header fields"),
        ('dicom = { Modality = "CT" }\nposition = 1', r"rules\[1\]: a dicom rule takes whole series"),
        (
            'dicom = { Modality = "CT" }\nimage_name = "{PatientName}"',
            r"image_name '\{PatientName\}' uses \{PatientName\}",
        ),
    ],
)
def test_a_wrong_dicom_rule_is_refused_naming_the_key(tmp_path: Path, rule: str, message: str) -> None:
    with pytest.raises(JobFileError, match=message):
        load_job(write_job(tmp_path, rules=f'[[rules]]\nsocket = "ct-image"\n{rule}\n'))


def test_the_dicom_table_sets_staging_and_can_send_files_as_they_are(tmp_path: Path) -> None:
    job = load_job(
        write_job(tmp_path, rules=BY_MODALITY, head='[dicom]\ndeidentify = false\nstaging_budget = "1 GiB"\n')
    )
    assert job.dicom.deidentify is False and job.dicom.staging_budget == 1024**3
    assert job.dicom.staging == tmp_path / "job.dicom-staging"
    assert job.dicom.image_name_template("dicom-image-set") == "{title} {Modality}"
    with pytest.raises(JobFileError, match="dicom.deidentify must be true or false"):
        load_job(write_job(tmp_path, rules=BY_MODALITY, head='[dicom]\ndeidentify = "no"\n'))


def test_a_dicom_image_set_socket_mapped_by_file_name_alone_is_a_blocking_job_finding(tmp_path: Path) -> None:
    from gcbulk.engine.plan.preflight import Preflight

    job = load_job(write_job(tmp_path, rules='[[rules]]\nglob = "*.mha"\nsocket = "dicom-image-set"\n'))
    catalogue = {"dicom-image-set": {"slug": "dicom-image-set", "kind": "DICOM Image Set", "super_kind": "Image"}}

    (found,) = Preflight(job, catalogue=catalogue).check_job()

    assert found.code == "dicom-image-set-rule" and found.blocking and "rules[1]" in found.message


def test_a_large_series_is_read_in_the_planners_process_pool_in_slice_order(tmp_path: Path) -> None:
    paths = identified_series(tmp_path / "cases" / "patient1", 40, rows=2, columns=2)
    renamed = [p.rename(p.with_name(f"IM{(17 * i) % 40:02d}")) for i, p in enumerate(paths)]  # names say nothing

    (case,), _ = plan(load_job(write_job(tmp_path, rules=BY_MODALITY, head="[dicom]\nworkers = 2\n")))

    assert [f.name for f in case.items[0].files] == [p.name for p in renamed]


@pytest.mark.parametrize(
    ("tag", "first", "other", "shown"),
    [
        ("StudyID", "S1", "S2", lambda v: identifier_label("StudyID", v)),
        ("StudyDate", "20240101", "20240102", lambda v: v),
        ("AccessionNumber", "ACC-1", "ACC-2", lambda v: identifier_label("AccessionNumber", v)),
        ("SeriesNumber", 1, 7, str),
    ],
)
def test_an_image_set_whose_files_differ_in_one_of_the_seven_tags_is_blocked_naming_files_and_values(
    tmp_path: Path, tag: str, first: object, other: object, shown: Any
) -> None:
    """The server asserts seven tags equal in every file of an image set and refuses it silently otherwise
    (docs/gc-api.md §11); plan blocks the case, naming each value (identifiers as hashes) and its files."""
    folder = tmp_path / "cases" / "patient1"
    folder.mkdir(parents=True)
    paths = identified_series(folder, 4, seed=5)
    edit(paths, StudyID="S1", StudyDate="20240101", AccessionNumber="ACC-1")
    edit(paths[3:], **{tag: other})
    rules = '[[rules]]\ndicom = { Modality = "CT" }\nsocket = "dicom-image-set"\n'

    (case,), _ = plan(load_job(write_job(tmp_path, rules=rules)))

    assert case.blocking and case.items == ()
    (blocked,) = case.findings
    assert blocked.severity == "blocking" and f"2 different {tag} values" in blocked.message
    assert f"{shown(first)}: patient1/slice_000.dcm, patient1/slice_001.dcm, patient1/slice_002.dcm" in blocked.message
    assert f"{shown(other)}: patient1/slice_003.dcm" in blocked.message
    assert set(blocked.files) == {f"patient1/{p.name}" for p in paths}
    if tag in ("StudyID", "AccessionNumber"):
        assert str(first) not in blocked.message and str(other) not in blocked.message


def test_a_tag_some_files_lack_does_not_block_as_the_server_compares_only_present_ones(tmp_path: Path) -> None:
    folder = tmp_path / "cases" / "patient1"
    folder.mkdir(parents=True)
    paths = identified_series(folder, 3, seed=6)
    edit(paths[:1], AccessionNumber="ACC-1")
    rules = '[[rules]]\ndicom = { Modality = "CT" }\nsocket = "dicom-image-set"\n'

    (case,), _ = plan(load_job(write_job(tmp_path, rules=rules)))

    assert not case.blocking and case.findings == ()


PHI_NAME = "SMITH^JOHNATHAN"
PHI_ID = "MRN-778899"


def _phi_series(folder: Path) -> list[Path]:
    paths = identified_series(folder, 2, seed=7, description=f"chest {PHI_NAME} axial")
    edit(paths, PatientName=PHI_NAME, PatientID=PHI_ID)
    return paths


@pytest.mark.parametrize("template", ["{SeriesDescription}", "{Modality} {SeriesNumber}"])
def test_an_image_name_from_a_field_de_identification_removes_blocks_its_case(tmp_path: Path, template: str) -> None:
    _phi_series(tmp_path / "cases" / "case1")
    rules = f'[[rules]]\ndicom = {{ Modality = "CT" }}\nsocket = "dicom-image-set"\nimage_name = "{template}"\n'

    (case,), _ = plan(load_job(write_job(tmp_path, rules=rules)))

    assert case.blocking and case.items == ()
    (blocked,) = [f for f in case.findings if f.code == "image-name-not-deidentified"]
    assert blocked.severity == "blocking" and len(blocked.files) == 2
    field = template.split()[-1].strip("{}")
    action = "removes" if field == "SeriesDescription" else "empties"
    assert f"uses {field} (the procedure {action} it)" in blocked.message
    assert '"{socket}", "{title}", "{Modality}"' in blocked.fix and "--allow-phi-titles" in blocked.fix
    assert "SMITH" not in blocked.message


@pytest.mark.parametrize(
    ("folder", "kind"), [(f"{PHI_ID}_ct", "PatientID"), ("Smith John", "PatientName"), ("johnathan-2", "PatientName")]
)
def test_a_title_holding_an_identifier_from_the_cases_own_headers_blocks_the_case(
    tmp_path: Path, folder: str, kind: str
) -> None:
    _phi_series(tmp_path / "cases" / folder)
    rules = '[[rules]]\ndicom = { Modality = "CT" }\nsocket = "dicom-image-set"\n'

    (case,), _ = plan(load_job(write_job(tmp_path, rules=rules)))

    assert case.blocking
    (blocked,) = case.findings
    assert blocked.code == "phi-in-name" and blocked.severity == "blocking"
    assert f"the title {folder!r} holds the {kind} read from this case's DICOM headers" in blocked.message


def test_an_image_name_holding_the_patient_name_blocks_its_case(tmp_path: Path) -> None:
    """{title} is safe as a field, but a title that carries the patient's name makes the image name carry it too."""
    _phi_series(tmp_path / "cases" / "JOHNATHAN")
    rules = '[[rules]]\ndicom = { Modality = "CT" }\nsocket = "dicom-image-set"\nimage_name = "{title} {Modality}"\n'

    (case,), _ = plan(load_job(write_job(tmp_path, rules=rules)))

    assert {f.code for f in case.findings} == {"phi-in-name"} and case.items == ()
    (name,) = [f for f in case.findings if "image name" in f.message]
    assert "image_name = '{title} {Modality}'" in name.message and "JOHNATHAN CT" not in name.message


def test_allow_phi_titles_turns_the_blocks_into_warnings_and_plans_the_case(tmp_path: Path) -> None:
    _phi_series(tmp_path / "cases" / f"{PHI_ID}_ct")
    rules = '[[rules]]\ndicom = { Modality = "CT" }\nsocket = "dicom-image-set"\nimage_name = "{SeriesDescription}"\n'
    head = "[dicom]\nallow_phi_titles = true\n"

    (case,), _ = plan(load_job(write_job(tmp_path, rules=rules, head=head)))

    assert not case.blocking and [i.socket_slug for i in case.items] == ["dicom-image-set"]
    assert sorted(f.code for f in case.findings) == ["image-name-not-deidentified", "phi-in-name", "phi-in-name"]
    assert {f.severity for f in case.findings} == {"warning"}


def test_a_title_with_a_short_id_inside_a_word_is_not_taken_for_it(tmp_path: Path) -> None:
    paths = identified_series(tmp_path / "cases" / "patient001", 2, seed=8)
    edit(paths, PatientID="001", PatientName="DOE^JO")
    rules = '[[rules]]\ndicom = { Modality = "CT" }\nsocket = "dicom-image-set"\n'

    (case,), _ = plan(load_job(write_job(tmp_path, rules=rules)))

    assert case.findings == () and not case.blocking


@pytest.mark.parametrize("how", ["flag", "environment", "none"])
def test_gcbulk_plan_blocks_a_phi_title_unless_asked_by_flag_or_environment(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gcbulk.engine.cli import main

    _phi_series(tmp_path / "cases" / f"{PHI_ID}_ct")
    job_file = write_job(tmp_path, rules='[[rules]]\ndicom = { Modality = "CT" }\nsocket = "dicom-image-set"\n')
    monkeypatch.delenv("GCBULK_ALLOW_PHI_TITLES", raising=False)
    if how == "environment":
        monkeypatch.setenv("GCBULK_ALLOW_PHI_TITLES", "1")

    code = main(["plan", str(job_file), "--offline", *(["--allow-phi-titles"] if how == "flag" else [])])

    out = capsys.readouterr().out
    if how == "none":
        assert code == 1 and "BLOCKING [phi-in-name]" in out
    else:
        assert code == 0 and "WARNING [phi-in-name]" in out and "(sent as it is: --allow-phi-titles)" in out

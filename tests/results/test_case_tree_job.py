"""The job file an archive export writes: its rules map every file form back to its socket, and the job loader reads
it (``engine/results/case_tree_job.py``). Pure: no server."""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

import pytest

from gcbulk.engine.jobfile import load_job
from gcbulk.engine.results.case_tree_job import (
    PREVIOUS_JOB_FILE,
    TARGET_PLACEHOLDER,
    TreeRule,
    rule_for,
    write_job,
    write_titles,
)
from gcbulk.engine.results.dicom_instances import image_files


@pytest.mark.parametrize(
    ("socket", "files", "is_value", "want"),
    [
        (
            "patient-age",
            ["patient-age.json"],
            True,
            TreeRule(socket="patient-age", glob="patient-age.json", value=True),
        ),
        ("ct-image", ["ct-image.mha"], False, TreeRule(socket="ct-image", glob="ct-image.*")),
        ("report-pdf", ["report-pdf.pdf"], False, TreeRule(socket="report-pdf", glob="report-pdf.*")),
        ("nodule-points", ["nodule-points.json"], False, TreeRule(socket="nodule-points", glob="nodule-points.*")),
        # The data file sorts first; the header still decides the form.
        ("ct-image", ["ct-image/a.zraw", "ct-image/b.mhd"], False, TreeRule(socket="ct-image", glob="ct-image/*.mhd")),
        (
            "dicom-image-set",
            ["dicom-image-set/1.2.3.dcm", "dicom-image-set/1.2.4.dcm"],
            False,
            TreeRule(socket="dicom-image-set", glob="dicom-image-set/*.dcm", group="dicom-series"),
        ),
        ("slide", ["slide/a.tif", "slide/b.tif"], False, TreeRule(socket="slide", glob="slide/*", group="all")),
    ],
)
def test_each_file_form_maps_back_to_its_socket(socket, files, is_value, want):
    assert rule_for(socket, [PurePosixPath(f) for f in files], is_value=is_value) == want


def test_the_written_job_file_loads_with_its_rules_titles_and_server(tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not read by the loader beyond existing\n")
    rules = [
        TreeRule(socket="ct-image", glob="ct-image.*"),
        TreeRule(socket="patient-age", glob="patient-age.json", value=True),
        TreeRule(socket="dicom-image-set", glob="dicom-image-set/*.dcm", group="dicom-series"),
    ]
    (tmp_path / "cases").mkdir()
    titles = [("case 1", "case 1", "pk1"), ("a _quote_-0123456789", 'a "quote"\\back =1+1', "pk2")]
    write_titles(tmp_path, titles)
    job_file = write_job(
        tmp_path, archive='odd"slug\n', base_url="https://127.0.0.1:8443/api/v1/", ca_file=ca, rules=rules
    )

    job = load_job(job_file)

    assert job.reader_study == TARGET_PLACEHOLDER
    assert job.base_url == "https://127.0.0.1:8443/api/v1/" and job.ca_file == ca
    assert job.case_root == tmp_path / "cases"
    assert [(r.socket, r.glob, r.value, r.group) for r in job.rules] == [
        ("ct-image", "ct-image.*", False, None),
        ("patient-age", "patient-age.json", True, None),
        ("dicom-image-set", "dicom-image-set/*.dcm", False, "dicom-series"),
    ]
    # Titles come back exactly, a formula-like one included (not escaped with an apostrophe as in answers.csv).
    assert dict(job.cases.titles or {}) == {"case 1": "case 1", "a _quote_-0123456789": 'a "quote"\\back =1+1'}
    with (tmp_path / "titles.csv").open(newline="") as handle:
        assert [row["archive_item_pk"] for row in csv.DictReader(handle)] == ["pk1", "pk2"]
    assert (tmp_path / "job.toml").stat().st_mode & 0o077 == 0


async def test_an_image_s_dzi_tiles_are_left_out_of_its_files():
    image = {
        "pk": "i1",
        "dicom_image_set": None,
        "files": [
            {"pk": "f1", "file": "https://h/media/images/aa/bb/i1/slide.tif", "image_type": "TIFF"},
            {"pk": "f2", "file": "https://h/media/images/aa/bb/i1/slide.dzi", "image_type": "DZI"},
        ],
    }

    files = await image_files(None, image)

    assert [f["pk"] for f in files] == ["f1"]


def test_the_target_a_user_named_survives_the_next_export_and_other_edits_are_kept_beside_it(tmp_path: Path):
    rules = [TreeRule(socket="ct-image", glob="ct-image.*")]
    url = "https://127.0.0.1:8443/api/v1/"
    job_file = write_job(tmp_path, archive="a", base_url=url, ca_file=None, rules=rules)
    job_file.write_text(job_file.read_text().replace(TARGET_PLACEHOLDER, "my-study"))

    write_job(tmp_path, archive="a", base_url=url, ca_file=None, rules=rules)

    assert 'reader_study = "my-study"' in job_file.read_text()
    assert not (tmp_path / PREVIOUS_JOB_FILE).exists()  # nothing else differed
    job_file.write_text(job_file.read_text() + "\n[engine]\nfiles_in_flight = 2\n")

    write_job(tmp_path, archive="a", base_url=url, ca_file=None, rules=[*rules, TreeRule(socket="x", glob="x.*")])

    assert 'reader_study = "my-study"' in job_file.read_text() and "files_in_flight" not in job_file.read_text()
    assert "files_in_flight = 2" in (tmp_path / PREVIOUS_JOB_FILE).read_text()

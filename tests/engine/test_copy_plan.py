"""The plan of a copy from the source's listing (pure: no server, no ledger) and its job file's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcbulk.engine.gc.errors import ConfigurationError
from gcbulk.engine.gc.target_ref import ARCHIVE, READER_STUDY, TargetRef
from gcbulk.engine.jobfile import JobFileError
from gcbulk.engine.service.copy_job import CopyJob, copy_cases, load_copy_job

IMAGE_URL = "https://gc.example/api/v1/cases/images/0f7c/"


def socket(slug: str, kind: str) -> dict[str, str]:
    return {"slug": slug, "super_kind": kind}


def container(pk: str, title: str, *values: dict[str, object]) -> dict[str, object]:
    return {"pk": pk, "title": title, "values": list(values)}


CT = {"interface": socket("ct-image", "Image"), "image": IMAGE_URL}
SCORE = {"interface": socket("score", "Value"), "value": {"grade": 3}}
REPORT = {"interface": socket("report", "File"), "file": "https://gc.example/media/report.pdf"}


def job(**fields: object) -> CopyJob:
    defaults: dict[str, object] = {
        "job_file": Path("/jobs/copy.toml"),
        "base_url": "https://gc.example/api/v1/",
        "source": TargetRef(ARCHIVE, "a"),
        "target": TargetRef(READER_STUDY, "s"),
    }
    return CopyJob(**{**defaults, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "listing", "want"),
    [
        # every socket under its own slug; an image by its URL, a value as it is
        ({}, [container("1", "p1", CT, SCORE)], {"p1": {"ct-image": IMAGE_URL, "score": {"grade": 3}}}),
        # [sockets] maps and leaves out what it does not list (the file socket too)
        (
            {"sockets": {"ct-image": "ct"}},
            [container("1", "p1", CT, SCORE, REPORT)],
            {"p1": {"ct": IMAGE_URL}},
        ),
        # the title template, include and exclude over the source titles
        (
            {"title": "copy-{title}-{pk}", "include": ("p*",), "exclude": ("p2",)},
            [container("1", "p1", CT), container("2", "p2", CT), container("3", "q3", CT)],
            {"copy-p1-1": {"ct-image": IMAGE_URL}},
        ),
        # an untitled source container gets its title from {pk}
        ({"title": "item-{pk}"}, [container("9", "", CT)], {"item-9": {"ct-image": IMAGE_URL}}),
    ],
)
def test_a_copy_plans_one_case_per_source_container(
    fields: dict[str, object], listing: list[dict[str, object]], want: dict[str, dict[str, object]]
) -> None:
    cases = copy_cases(job(**fields), listing)
    assert {
        case.title: {i.socket_slug: json.loads(i.value_json or "null") for i in case.items} for case in cases
    } == want
    assert all(not item.files for case in cases for item in case.items), "no file: no byte moves"


def test_an_archives_items_are_copied_in_natural_title_order_and_a_studys_display_sets_as_listed() -> None:
    listing = [container("3", "patient10", CT), container("1", "Patient2", CT), container("2", "patient1", CT)]
    from_archive = copy_cases(job(), listing)
    assert [case.title for case in from_archive] == ["patient1", "Patient2", "patient10"]
    from_study = copy_cases(job(source=TargetRef(READER_STUDY, "s"), target=TargetRef(ARCHIVE, "a")), listing)
    assert [case.title for case in from_study] == ["patient10", "Patient2", "patient1"], "the study's own order"


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        ([container("1", "p1", REPORT)], "holds a file in socket 'report', which gcbulk copy does not copy"),
        ([container("7", "", CT)], "archive item 7 has no title, and the title template '{title}' gives it none"),
    ],
)
def test_what_a_copy_cannot_plan_is_named(listing: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        copy_cases(job(), listing)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('from = "archive:a"\n', "say where to copy to: --to archive:SLUG|reader-study:SLUG"),
        ('from = "archive:a"\nto = "study:s"\n', "'study:s' is not a target"),
        ('from = "archive:a"\nto = "reader-study:s"\ntitle = "same"\n', "must use {title} or {pk}"),
        ('from = "archive:a"\nto = "reader-study:s"\ntitle = "{folder}"\n', "must use {title} or {pk}"),
        ('from = "archive:a"\nto = "reader-study:s"\ninclude = "p*"\n', "include is a list of globs"),
        ('from = "archive:a"\nto = "reader-study:s"\n[sockets]\n', "[sockets] maps source sockets"),
        ('from = "archive:a"\nto = "reader-study:s"\ntoken = "x"\n', "unknown key 'token'"),
    ],
)
def test_a_copy_job_file_that_cannot_be_used_says_what_to_write(tmp_path: Path, text: str, message: str) -> None:
    job_file = tmp_path / "copy.toml"
    job_file.write_text(f'base_url = "https://gc.example/api/v1/"\n{text}')
    with pytest.raises(JobFileError) as raised:
        load_copy_job(job_file)
    assert message in str(raised.value)

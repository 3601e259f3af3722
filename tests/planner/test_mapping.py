"""What ``gcbulk plan`` shows about which file goes to which socket, and its warnings about positional rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcbulk.engine.cli import main
from tests.planner.conftest import put, write_job

GLOB_RULES = """
[[rules]]
glob = "ct.mha"
socket = "ct-image"

[[rules]]
glob = "airway_seg*.mha"
socket = "airway-segmentation"
"""


@pytest.fixture
def wrong_sorting_tree(cases_dir: Path) -> Path:
    """The tutorial's layout, with names that sort "wrong": airway_seg.mha comes before ct.mha."""
    for n in (1, 2, 3):
        put(cases_dir / f"patient{n}" / "ct.mha", 100)
        put(cases_dir / f"patient{n}" / "airway_seg.mha", 50)
    return cases_dir


def test_positions_on_names_that_sort_wrong_show_the_swap_and_warn(
    job_dir: Path, wrong_sorting_tree: Path, capsys: pytest.CaptureFixture
) -> None:
    job = write_job(job_dir)  # the tutorial's position rules
    assert main(["plan", str(job), "--offline", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Mapping (socket ← file names, by number of cases):" in out
    assert "  ct-image ← airway_seg.mha in 3 cases\n" in out
    assert "  airway-segmentation ← ct.mha in 3 cases\n" in out
    assert "WARNING [position-name-mismatch] rules[1] (position 1 -> ct-image)" in out
    assert "sends 'airway_seg.mha' (3 cases), whose name looks like socket 'airway-segmentation'" in out
    assert (
        "fix: map by name instead of position, e.g. glob = 'airway_seg.mha' with socket = 'airway-segmentation'" in out
    )


def test_a_position_taking_different_names_in_different_cases_warns_and_suggests_a_glob(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    for n in range(1, 5):
        put(cases_dir / f"p{n}" / "image.mha", 100)
        put(cases_dir / f"p{n}" / "mask.mha", 50)
    put(cases_dir / "p5" / "a_extra.mha", 10)  # sorts first: position 1 takes it instead of image.mha
    put(cases_dir / "p5" / "image.mha", 100)
    job = write_job(job_dir)
    assert main(["plan", str(job), "--offline", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "  ct-image ← image.mha in 4 cases, ← a_extra.mha in 1 case\n" in out
    assert "WARNING [position-names-differ] rules[1] (position 1 -> ct-image)" in out
    assert "takes files of different names in different cases (image.mha in 4 cases, a_extra.mha in 1 case)" in out
    assert "fix: map by name instead: replace position with a name pattern, e.g. glob = 'image.mha'" in out


def test_name_patterns_map_the_same_tree_right_without_warnings(
    job_dir: Path, wrong_sorting_tree: Path, capsys: pytest.CaptureFixture
) -> None:
    job = write_job(job_dir, rules=GLOB_RULES)
    assert main(["plan", str(job), "--offline", "--dry-run", "--show-cases", "2"]) == 0
    out = capsys.readouterr().out
    assert "  ct-image ← ct.mha in 3 cases\n  airway-segmentation ← airway_seg.mha in 3 cases\n" in out
    assert "WARNING" not in out
    assert (
        "Cases (first 2 of 3; case → socket ← files):\n  patient1\n      ct-image ← patient1/ct.mha\n"
        "      airway-segmentation ← patient1/airway_seg.mha\n  patient2\n"
    ) in out


def test_json_gives_every_case_socket_and_files_and_the_mapping(
    job_dir: Path, wrong_sorting_tree: Path, capsys: pytest.CaptureFixture
) -> None:
    put(wrong_sorting_tree / "patient3" / "notes.mha", content=b"")  # blocks patient3 only
    job = write_job(job_dir, rules=GLOB_RULES)
    assert main(["plan", str(job), "--offline", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["mapping"]["ct-image"]["files"] == {"ct.mha": 3}
    assert report["cases"][0] == {
        "title": "patient1",
        "folder": "patient1",
        "blocked": False,
        "sockets": {"ct-image": ["patient1/ct.mha"], "airway-segmentation": ["patient1/airway_seg.mha"]},
    }
    assert [(c["title"], c["blocked"]) for c in report["cases"]] == [
        ("patient1", False),
        ("patient2", False),
        ("patient3", True),
    ]
    assert report["blocking"] is False and report["plan"]["blocked"] == ["patient3"]


def test_a_required_socket_missing_blocks_only_that_case(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    put(cases_dir / "p1" / "ct.mha")
    put(cases_dir / "p1" / "airway_seg.mha")
    put(cases_dir / "p2" / "ct.mha")
    rules = GLOB_RULES.replace('socket = "airway-segmentation"', 'socket = "airway-segmentation"\nrequired = true')
    job = write_job(job_dir, rules=rules)
    assert main(["plan", str(job), "--offline"]) == 1
    out = capsys.readouterr().out
    assert f"BLOCKING [missing-required] {cases_dir / 'p2'}" in out
    assert (
        "no file for required socket 'airway-segmentation' (rules[2] (glob 'airway_seg*.mha' -> "
        "airway-segmentation)); the case would be incomplete"
    ) in out
    assert "Blocked cases (1):\n  p2\n" in out
    assert "  airway-segmentation ← airway_seg.mha in 1 case, nothing in 1 case\n" in out


def test_required_must_be_true_or_false(job_dir: Path, capsys: pytest.CaptureFixture) -> None:
    job = write_job(job_dir, rules=GLOB_RULES.replace('socket = "ct-image"', 'socket = "ct-image"\nrequired = 1'))
    assert main(["plan", str(job), "--offline"]) == 2
    assert "rules[1]: required must be true or false" in capsys.readouterr().err

"""``gcbulk export`` against the emulator: every answer, readable, per case, with masks; who sees what; pages."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from gcbulk.emulator.answer_types import ANSWER_TYPES, NON_ANSWERABLE_TYPES
from gcbulk.engine.results.answer_tables import ANSWER_COLUMNS
from gcbulk.state.results_ledger import ExportFolderTaken
from tests.results.conftest import ANSWER_LIST, World, stored_object_bytes


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_editor_export_has_every_answer_of_every_type_readable_and_per_case(world: World, tmp_path: Path):
    world.add_every_answer_type()
    world.add_display_sets(["case-1", "case-2"])
    answers = await world.answer_all(["reader1", "reader2"])
    out = tmp_path / "out"

    summary = await world.export(out)

    assert summary.failures == []
    assert summary.answers == len(answers) and summary.answers_new == len(answers)
    rows = read_csv(out / "answers.csv")
    assert list(rows[0]) == list(ANSWER_COLUMNS)
    assert sorted(r["answer_pk"] for r in rows) == sorted(a.pk for a in answers)
    answerable = [t for t in ANSWER_TYPES if t not in NON_ANSWERABLE_TYPES]
    assert {r["answer_type"] for r in rows} == set(answerable)

    choice = world.question("Choice")
    titles = {o.id: o.title for o in choice.options}
    for row in (r for r in rows if r["answer_type"] == "Choice"):
        assert row["readable_answer"] == titles[json.loads(row["answer"])]
    multiple = world.question("Multiple choice")
    order = [o.id for o in multiple.options]
    for record in (r for r in read_jsonl(out / "answers.jsonl") if r["answer_type"] == "Multiple choice"):
        expected = [o.title for o in multiple.options if o.id in record["answer"]]
        assert record["readable_answer"] == expected and sorted(record["answer"], key=order.index) == record["answer"]

    # Per case: one row per display set and reader, one column per answerable question, the case's values joined.
    per_case = read_csv(out / "answers_per_case.csv")
    assert [(r["case"], r["reader"]) for r in per_case] == [
        ("case-1", "reader1"),
        ("case-1", "reader2"),
        ("case-2", "reader1"),
        ("case-2", "reader2"),
    ]
    answerable_texts = [q.question_text for q in world.questions() if q.answer_type not in NON_ANSWERABLE_TYPES]
    assert [c for c in per_case[0] if c in answerable_texts] == answerable_texts
    assert [r["socket:patient-age"] for r in per_case] == ["40", "40", "41", "41"]
    assert (
        per_case[0]["Overall quality"]
        == titles[
            json.loads(
                next(
                    r
                    for r in rows
                    if r["case"] == "case-1" and r["creator"] == "reader1" and r["answer_type"] == "Choice"
                )["answer"]
            )
        ]
    )

    # Masks: downloaded byte for byte, named by case / question / reader, and the table points at them.
    mask_answers = [a for a in answers if a.answer_image_pk]
    assert summary.masks.downloaded == len(mask_answers) == 4
    for answer in mask_answers:
        case = world.store.display_sets[answer.display_set_pk].title
        path = out / "masks" / case / "Corrected airway mask" / f"{answer.creator.username}.mha"
        assert path.read_bytes() == stored_object_bytes(world, answer.answer_image_pk)
    assert per_case[0]["Corrected airway mask"] == "masks/case-1/Corrected airway mask/reader1.mha"

    questions = json.loads((out / "questions.json").read_text())
    assert [q["pk"] for q in questions] == world.study.question_pks
    assert {o["title"] for o in next(q for q in questions if q["pk"] == choice.pk)["options"]} == set(titles.values())
    display_sets = read_csv(out / "display_sets.csv")
    assert [(d["title"], d["order"], d["socket:patient-age"]) for d in display_sets] == [
        ("case-1", "10", "40"),
        ("case-2", "20", "41"),
    ]


async def test_reader_sees_only_their_own_answers(world: World, tmp_path: Path):
    world.add_display_sets(["case-1"])
    await world.answer_all(["reader1", "reader2"], masks=False)
    await world.answer_all(["editor"], masks=False, is_ground_truth=True)

    await world.export(tmp_path / "reader1", user="reader1")
    await world.export(tmp_path / "editor", user="editor")
    await world.export(tmp_path / "editor-mine", user="editor", mine=True)

    assert {r["creator"] for r in read_csv(tmp_path / "reader1" / "answers.csv")} == {"reader1"}
    editor_rows = read_csv(tmp_path / "editor" / "answers.csv")
    assert {r["creator"] for r in editor_rows} == {"reader1", "reader2", "editor"}
    assert {r["is_ground_truth"] for r in editor_rows if r["creator"] == "editor"} == {"true"}
    # answers/mine/ never holds ground truth (docs/gc-api.md §4): the editor has no answers of their own here.
    assert read_csv(tmp_path / "editor-mine" / "answers.csv") == []


async def test_more_than_a_thousand_answers_are_read_across_pages(world: World, tmp_path: Path):
    world.add_every_answer_type()
    world.add_display_sets([f"case-{n:03d}" for n in range(25)])
    answers = await world.answer_all(["reader1", "reader2"], masks=False)
    assert len(answers) > 1000

    summary = await world.export(tmp_path / "out")

    assert summary.answers == len(answers)
    assert len(read_csv(tmp_path / "out" / "answers.csv")) == len(answers)
    assert len(read_csv(tmp_path / "out" / "answers_per_case.csv")) == 25 * 2
    assert world.requests(ANSWER_LIST) == 2  # pages of 1000 (docs/gc-api.md §0: the server's maximum)


async def test_export_folder_of_another_study_is_refused(world: World, tmp_path: Path):
    world.add_display_sets(["case-1"])
    await world.export(tmp_path / "out")
    world.store.reader_study_by_slug("example-study").slug = "renamed-study"
    async with world.client() as client:
        from gcbulk.engine.results.export import ExportOptions, export_reader_study

        with pytest.raises(ExportFolderTaken, match="already holds an export of reader study 'example-study'"):
            await export_reader_study(client, ExportOptions(reader_study="renamed-study", out_dir=tmp_path / "out"))


async def test_hostile_case_titles_never_write_outside_the_export_folder(world: World, tmp_path: Path):
    # Titles the server can hold: no NUL (PostgreSQL text refuses it, DRF answers 400) and at most 255 characters.
    hostile = ["../../escaped", "/etc/passwd-case", "CON", "a\x01b", "x" * 255, "..", 'a\\b:c*?|"<>']
    display_sets = world.add_display_sets(hostile)
    await world.answer_all(["reader1"])
    out = tmp_path / "deep" / "out"
    out.parent.mkdir()
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out) and "emulator" not in p.parts}

    summary = await world.export(out)

    assert summary.failures == [] and summary.masks.downloaded == len(hostile)
    after = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out) and "emulator" not in p.parts}
    assert after == before
    mask_dirs = sorted(p.name for p in (out / "masks").iterdir())
    assert len(mask_dirs) == len(hostile)
    for mask in (out / "masks").rglob("*.mha"):
        assert mask.resolve().is_relative_to(out.resolve())
    per_case = read_csv(out / "answers_per_case.csv")
    assert sorted(r["case"] for r in per_case) == sorted(hostile)  # the data keeps the real titles
    assert {r["display_set"] for r in per_case} == {ds.pk for ds in display_sets}

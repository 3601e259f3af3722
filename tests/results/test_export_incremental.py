"""Running ``gcbulk export`` again: only new and modified answers are written, only new masks fetched, and the
files stay complete."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import anyio
import pytest

from gcbulk.engine.results.export import ExportOptions, export_reader_study
from gcbulk.state.ledger import LedgerLocked
from gcbulk.state.results_ledger import ResultsLedger
from tests.results.conftest import (
    IMAGE_DETAIL,
    S3_GET,
    STUDY,
    World,
    eventually,
    faults,
)


def answers_by_pk(out: Path) -> dict[str, dict[str, str]]:
    with (out / "answers.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_pk = {row["answer_pk"]: row for row in rows}
    assert len(by_pk) == len(rows), "an answer appears twice"
    return by_pk


async def test_rerun_writes_only_changed_answers_and_fetches_only_new_masks(world: World, tmp_path: Path):
    world.add_display_sets(["case-1", "case-2"])
    first_answers = await world.answer_all(["reader1"])
    out = tmp_path / "out"
    first = await world.export(out)
    assert first.answers_new == len(first_answers) and first.masks.downloaded == 2

    # Readers work on: reader1 changes a Choice answer, reader2 answers case-1 (with a mask), one answer goes away.
    choice = world.question("Choice")
    changed = next(a for a in first_answers if a.question_pk == choice.pk)
    changed.answer = choice.options[2].id
    world.context.clock.advance(60)
    changed.modified = world.context.clock.now()
    new_answers = await world.answer_all(["reader2"], [world.display_sets[0]])
    removed = next(a for a in first_answers if a.question_pk == world.question("Text").pk)
    del world.store.answers[removed.pk]
    world.context.counters.reset()

    second = await world.export(out)

    assert (second.answers_new, second.answers_modified, second.answers_removed) == (len(new_answers), 1, 1)
    assert second.answers_unchanged == len(first_answers) - 2
    assert (second.masks.downloaded, second.masks.skipped) == (1, 2)
    assert world.requests(IMAGE_DETAIL) == 1 and world.requests(S3_GET) == 1
    assert second.files_written
    rows = answers_by_pk(out)
    assert set(rows) == {a.pk for a in first_answers + new_answers} - {removed.pk}
    assert rows[changed.pk]["readable_answer"] == choice.options[2].title
    assert rows[changed.pk]["modified"] != rows[changed.pk]["created"]
    jsonl = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(jsonl) == len(rows)

    world.context.counters.reset()
    third = await world.export(out)

    assert third.answers_new == third.answers_modified == third.answers_removed == 0
    assert not third.files_written and third.masks.skipped == 3
    assert world.requests(IMAGE_DETAIL) == 0 and world.requests(S3_GET) == 0


async def test_deleted_output_file_is_written_again_on_the_next_run(world: World, tmp_path: Path):
    world.add_display_sets(["case-1"])
    await world.answer_all(["reader1"], masks=False)
    out = tmp_path / "out"
    await world.export(out)
    expected = (out / "answers_per_case.csv").read_text()
    (out / "answers_per_case.csv").unlink()

    summary = await world.export(out)

    assert summary.files_written and (out / "answers_per_case.csv").read_text() == expected


async def test_interrupted_export_leaves_complete_files_and_finishes_on_the_next_run(world: World, tmp_path: Path):
    world.add_display_sets([f"case-{n}" for n in range(4)])
    answers = await world.answer_all(["reader1", "reader2"])
    out = tmp_path / "out"

    async def export_until_cancelled() -> None:
        async with world.client() as client:
            await export_reader_study(client, ExportOptions(reader_study=STUDY, out_dir=out))

    # Mask downloads crawl, so the export is cancelled while it downloads (after every answer was listed).
    async with faults(world, {"match": "GET s3", "latency_seconds": 2}), anyio.create_task_group() as group:
        group.start_soon(export_until_cancelled)
        await eventually(lambda: world.requests(S3_GET) >= 1, "the first mask download")
        group.cancel_scope.cancel()
    assert not (out / "answers.csv").exists()  # never a half-written file
    with ResultsLedger.open_export(out, reader_study=STUDY, base_url=world.emulator.base_url) as ledger:
        runs = ledger.rows("SELECT state FROM export_runs")
        assert [r["state"] for r in runs] == ["failed"]
        assert ledger.answer_count() == len(answers)

    summary = await world.export(out)

    assert summary.answers_new == 0 and summary.answers_unchanged == len(answers)
    assert summary.masks.downloaded == 8 and summary.files_written
    assert len(answers_by_pk(out)) == len(answers)


async def test_a_second_export_into_the_same_folder_at_once_is_refused(world: World, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    with ResultsLedger.open_export(out, reader_study=STUDY, base_url=world.emulator.base_url):
        with pytest.raises(LedgerLocked, match="in use by another gcbulk process"):
            await world.export(out)

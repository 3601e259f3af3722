"""Writes an export's files from its ledger: ``answers.csv``, ``answers.jsonl``, ``answers_per_case.csv``,
``questions.json`` and ``display_sets.csv``.

Every file is rebuilt whole from the ledger's tables — so it is complete after any incremental run — and written to
a temporary name, then renamed, so a reader never sees a half-written file and an interrupted run leaves the previous
one in place. Answers stream from one SQL query in per-case order (SQLite sorts on disk when it must), each answer
feeding the three answer files in one pass: memory stays flat however many answers there are.

Runs on the event-loop thread: the ledger's SQLite connection belongs to it. Nothing else runs meanwhile.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from gcbulk.engine.results.answer_tables import (
    ANSWER_COLUMNS,
    DISPLAY_SET_COLUMNS,
    SOCKET_COLUMN_PREFIX,
    AnswerView,
    QuestionInfo,
    answer_record,
    answer_row,
    display_set_row,
    wide_header,
    wide_rows,
)
from gcbulk.engine.results.csv_cells import SafeCsvWriter
from gcbulk.safe_files import replacing
from gcbulk.state.results_ledger import ResultsLedger

ANSWERS_CSV = "answers.csv"
ANSWERS_JSONL = "answers.jsonl"
PER_CASE_CSV = "answers_per_case.csv"
QUESTIONS_JSON = "questions.json"
DISPLAY_SETS_CSV = "display_sets.csv"
OUTPUTS = (ANSWERS_CSV, ANSWERS_JSONL, PER_CASE_CSV, QUESTIONS_JSON, DISPLAY_SETS_CSV)


def outputs_present(out_dir: Path) -> bool:
    return all((out_dir / name).is_file() for name in OUTPUTS)


def _replacing(path: Path) -> contextlib.AbstractContextManager[IO[str]]:
    """A text file that replaces ``path`` only once it is completely written: an exclusive 0600 temporary in the
    folder (a symlink planted there is never followed, issue 14), renamed into place."""
    return replacing(path, "w", encoding="utf-8", newline="")


def _view(row: dict[str, Any]) -> AnswerView:
    return AnswerView(
        pk=row["pk"],
        question_pk=row["question_pk"],
        display_set_pk=row["display_set_pk"],
        case_title=row["title"],
        case_order=row["sort_order"],
        case_values=json.loads(row["socket_values"] or "{}"),
        creator=row["creator"],
        created=row["created"],
        modified=row["modified"],
        is_ground_truth=bool(row["is_ground_truth"]),
        answer=json.loads(row["answer"]) if row["answer"] is not None else None,
        mask_files=row["mask_paths"].split("\n") if row["mask_paths"] else [],
        last_edit_duration=row["last_edit_duration"],
        total_edit_duration=row["total_edit_duration"],
    )


def _answers_feeding(
    rows: Iterable[dict[str, Any]], questions: dict[str, QuestionInfo], csv_out: Any, jsonl_out: IO[str]
) -> Iterator[AnswerView]:
    """Yields each answer for the per-case table after writing it to ``answers.csv`` and ``answers.jsonl``."""
    for row in rows:
        view = _view(row)
        record = answer_record(view, questions.get(view.question_pk))
        csv_out.writerow(answer_row(record))
        jsonl_out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        yield view


def write_outputs(
    ledger: ResultsLedger, questions_raw: Sequence[dict[str, Any]], questions: list[QuestionInfo], out_dir: Path
) -> int:
    """Rebuilds every output file from the ledger; returns the number of answers written."""
    sockets = ledger.socket_slugs()
    with _replacing(out_dir / QUESTIONS_JSON) as handle:
        json.dump(list(questions_raw), handle, ensure_ascii=False, indent=2)
        handle.write("\n")
    with _replacing(out_dir / DISPLAY_SETS_CSV) as handle:
        writer = SafeCsvWriter(handle)
        writer.writerow([*DISPLAY_SET_COLUMNS, *(SOCKET_COLUMN_PREFIX + slug for slug in sockets)])
        for display_set in ledger.iter_display_sets():
            writer.writerow(
                display_set_row(
                    display_set["pk"], display_set["title"] or "", display_set["order"], display_set["values"], sockets
                )
            )
    by_pk = {q.pk: q for q in questions}
    with (
        _replacing(out_dir / ANSWERS_CSV) as answers_csv,
        _replacing(out_dir / ANSWERS_JSONL) as answers_jsonl,
        _replacing(out_dir / PER_CASE_CSV) as per_case,
    ):
        answers_writer = SafeCsvWriter(answers_csv)
        answers_writer.writerow(ANSWER_COLUMNS)
        per_case_writer = SafeCsvWriter(per_case)
        per_case_writer.writerow(wide_header(questions, sockets))
        views = _answers_feeding(ledger.iter_answer_rows(), by_pk, answers_writer, answers_jsonl)
        for line in wide_rows(views, questions, sockets):
            per_case_writer.writerow(line)
    return ledger.answer_count()

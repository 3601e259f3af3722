"""Readable answers and the per-case table (engine/results/answer_tables.py), without a server."""

from __future__ import annotations

from typing import Any

from gcbulk.engine.results.answer_tables import (
    AnswerView,
    answer_record,
    answer_row,
    cell,
    pk_from_url,
    questions_from_api,
    readable_answer,
    socket_values,
    wide_header,
    wide_rows,
)

QUESTIONS = [
    {
        "pk": "q-choice",
        "answer_type": "Choice",
        "question_text_safe": "Overall &amp; quality",
        "options": [{"id": 1, "title": "Poor", "default": False}, {"id": 2, "title": "Good", "default": False}],
    },
    {
        "pk": "q-multi",
        "answer_type": "Multiple choice",
        "question_text_safe": "Findings",
        "options": [
            {"id": 5, "title": "Nodule", "default": False},
            {"id": 6, "title": "Emphysema", "default": False},
            {"id": 7, "title": "None", "default": False},
        ],
    },
    {"pk": "q-mask", "answer_type": "Mask", "question_text_safe": "Findings", "options": []},
    {"pk": "q-heading", "answer_type": "Heading", "question_text_safe": "Part 2", "options": []},
    {"pk": "q-box", "answer_type": "2D bounding box", "question_text": "Box", "options": []},
]


def questions() -> dict[str, Any]:
    return {q.pk: q for q in questions_from_api(QUESTIONS)}


def test_choice_answer_reads_as_the_option_title() -> None:
    assert readable_answer(questions()["q-choice"], 2) == "Good"


def test_multiple_choice_reads_as_titles_in_the_question_order() -> None:
    assert readable_answer(questions()["q-multi"], [7, 5]) == ["Nodule", "None"]


def test_an_option_deleted_since_is_named_not_dropped() -> None:
    assert readable_answer(questions()["q-choice"], 99) == "<unknown option 99>"
    assert readable_answer(questions()["q-multi"], [5, 42]) == ["Nodule", "<unknown option 42>"]


def test_mask_answer_reads_as_its_downloaded_file() -> None:
    mask = questions()["q-mask"]
    assert readable_answer(mask, {"upload_session_pk": "u"}, ["masks/c/Findings-2/r.mha"]) == "masks/c/Findings-2/r.mha"
    assert readable_answer(mask, {"upload_session_pk": "u"}, []) is None


def test_other_types_read_as_their_raw_answer() -> None:
    box = {"type": "2D bounding box", "corners": [[0, 0, 0]] * 4, "version": {"major": 1, "minor": 0}}
    assert readable_answer(questions()["q-box"], box) == box


def test_question_texts_are_unescaped_and_made_unique() -> None:
    parsed = questions_from_api(QUESTIONS)
    assert [q.text for q in parsed][:3] == ["Overall & quality", "Findings", "Findings"]
    assert [q.column for q in parsed][1:3] == ["Findings", "Findings (2)"]
    assert [q.folder for q in parsed][1:3] == ["Findings", "Findings-2"]


def test_cells_are_plain_text() -> None:
    assert cell(None) == ""
    assert cell(True) == "true"
    assert cell(["Nodule", "None"]) == "Nodule; None"
    assert cell({"a": [1, 2]}) == '{"a":[1,2]}'
    assert cell(1.5) == "1.5"


def test_socket_values_read_both_value_shapes() -> None:
    values = [
        {
            "interface": {"slug": "ct-image"},
            "image": "https://h/api/v1/cases/images/img-1/",
            "file": None,
            "value": None,
        },
        {"interface": "patient-age", "image": None, "file": None, "value": 42},
        {"interface": {"slug": "report-pdf"}, "image": None, "file": "https://h/media/x/report.pdf", "value": None},
    ]
    assert socket_values(values) == {
        "ct-image": "img-1",
        "patient-age": 42,
        "report-pdf": "https://h/media/x/report.pdf",
    }


def test_pk_from_url_takes_the_last_segment() -> None:
    assert pk_from_url("https://h/api/v1/reader-studies/questions/abc/") == "abc"
    assert pk_from_url(None) is None


def view(ds: str | None, creator: str, question: str, answer: Any, gt: bool = False) -> AnswerView:
    return AnswerView(
        pk=f"{ds}-{creator}-{question}",
        question_pk=question,
        display_set_pk=ds,
        case_title=f"case {ds}" if ds else None,
        case_order=10,
        case_values={"patient-age": 40},
        creator=creator,
        created="t",
        modified="t",
        is_ground_truth=gt,
        answer=answer,
        mask_files=[],
    )


def test_wide_table_has_one_row_per_case_and_reader_and_a_column_per_question() -> None:
    parsed = questions_from_api(QUESTIONS)
    views = [
        view("d1", "reader1", "q-choice", 1),
        view("d1", "reader1", "q-multi", [5]),
        view("d1", "reader2", "q-choice", 2),
        view("d1", "editor", "q-choice", 2, gt=True),
        view("d2", "reader1", "q-multi", [6, 7]),
    ]
    header = wide_header(parsed, ["patient-age"])
    rows = list(wide_rows(views, parsed, ["patient-age"]))
    assert header == [
        "case",
        "display_set",
        "display_set_order",
        "reader",
        "is_ground_truth",
        "socket:patient-age",
        "Overall & quality",
        "Findings",
        "Findings (2)",
        "Box",
    ]
    assert rows == [
        ["case d1", "d1", "10", "reader1", "false", "40", "Poor", "Nodule", "", ""],
        ["case d1", "d1", "10", "reader2", "false", "40", "Good", "", "", ""],
        ["case d1", "d1", "10", "editor", "true", "40", "Good", "", "", ""],
        ["case d2", "d2", "10", "reader1", "false", "40", "", "Emphysema; None", "", ""],
    ]


def test_answer_record_joins_the_case_and_keeps_the_raw_answer() -> None:
    parsed = {q.pk: q for q in questions_from_api(QUESTIONS)}
    record = answer_record(view("d1", "reader1", "q-multi", [5, 6]), parsed["q-multi"])
    assert record["case"] == "case d1" and record["case_values"] == {"patient-age": 40}
    assert record["answer"] == [5, 6] and record["readable_answer"] == ["Nodule", "Emphysema"]
    row = answer_row(record)
    assert row[5] == "[5,6]" and row[6] == "Nodule; Emphysema"


def test_answer_without_display_set_is_kept_under_its_own_case() -> None:
    parsed = {q.pk: q for q in questions_from_api(QUESTIONS)}
    assert answer_record(view(None, "reader1", "q-choice", 1), parsed["q-choice"])["case"] == "(no display set)"

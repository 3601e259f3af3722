"""Pure: how answers read to a person, and the rows of the export's tables.

* **Readable answers** (the tutorial's ``add_answer_title``, docs/gc-api.md §4): a Choice answer is an option ``id`` and a
  Multiple choice answer a list of ids; their titles come from the question's ``options``. Mask answers read as the
  local path of the downloaded mask. Every other type reads as its raw JSON.
* **Answers per case**: an answer names its display set (``answer.display_set``, docs/gc-api.md §4: the old ``images``
  field is gone); the case is that display set, with its title, order and socket values.
* **The wide table**: one row per display set and reader (ground truth apart), one column per question.

No I/O: the ledger supplies rows in the right order, ``engine/results/export_files.py`` writes what these functions return.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gcbulk.engine.results.safe_paths import unique_names

CHOICE = "Choice"
MULTIPLE_CHOICE = "Multiple choice"
MASK = "Mask"
HEADING = "Heading"  # docs/gc-api.md §4: its answer is always null, so it gets no column
NO_DISPLAY_SET = "(no display set)"

ANSWER_COLUMNS = (
    "case",
    "display_set",
    "display_set_order",
    "question",
    "answer_type",
    "answer",
    "readable_answer",
    "creator",
    "created",
    "modified",
    "is_ground_truth",
    "mask_files",
    "answer_pk",
    "question_pk",
    "last_edit_duration",
    "total_edit_duration",
)
WIDE_KEY_COLUMNS = ("case", "display_set", "display_set_order", "reader", "is_ground_truth")
DISPLAY_SET_COLUMNS = ("pk", "title", "order")
SOCKET_COLUMN_PREFIX = "socket:"


def pk_from_url(url: object) -> str | None:
    """The pk at the end of an API URL (``…/reader-studies/questions/<pk>/``); None for null or a non-URL."""
    if not isinstance(url, str) or not url:
        return None
    segments = [segment for segment in urlsplit(url).path.split("/") if segment]
    return segments[-1] if segments else None


def plain_text(data: Mapping[str, Any], field: str) -> str:
    """``<field>`` where the server still sends it, else ``<field>_safe`` unescaped (docs/gc-api.md §8: the ``*_safe``
    fields are the HTML-cleaned ones; a current server sends only those)."""
    for key in (field, f"{field}_safe"):
        value = data.get(key)
        if isinstance(value, str):
            return html.unescape(value)
    return ""


@dataclass(frozen=True)
class QuestionInfo:
    pk: str
    text: str
    answer_type: str
    options: Mapping[int, str]  # option id -> title, in the question's order
    position: int
    column: str  # unique among the study's questions: the wide table's column header
    folder: str  # unique, filesystem-safe: the mask folder name

    @property
    def has_answers(self) -> bool:
        return self.answer_type != HEADING


def questions_from_api(items: Iterable[Mapping[str, Any]]) -> list[QuestionInfo]:
    """The study's questions in their order, with column headers and mask folder names made unique (two questions
    may share a text)."""
    raw = list(items)
    texts = [plain_text(item, "question_text") or str(item.get("pk")) for item in raw]
    columns: list[str] = []
    seen: dict[str, int] = {}
    for text in texts:
        seen[text] = seen.get(text, 0) + 1
        columns.append(text if seen[text] == 1 else f"{text} ({seen[text]})")
    folders = unique_names(texts, fallback="question")
    return [
        QuestionInfo(
            pk=str(item["pk"]),
            text=text,
            answer_type=str(item.get("answer_type", "")),
            options={int(o["id"]): str(o.get("title", "")) for o in item.get("options") or [] if "id" in o},
            position=position,
            column=column,
            folder=folder,
        )
        for position, (item, text, column, folder) in enumerate(zip(raw, texts, columns, folders, strict=True))
    ]


def _option_title(question: QuestionInfo, option_id: Any) -> str:
    try:
        return question.options[int(option_id)]
    except (KeyError, TypeError, ValueError):
        # The option was deleted after the answer was given, or the answer is malformed: say so, keep the id.
        return f"<unknown option {option_id!r}>"


def readable_answer(question: QuestionInfo | None, raw: Any, mask_files: Sequence[str] = ()) -> Any:
    """What a person reads for ``raw``: option titles for (Multiple) choice, the mask path(s) for a Mask answer,
    the raw value otherwise. A Multiple choice lists titles in the question's option order, as the tutorial does."""
    if question is None or (raw is None and question.answer_type != MASK):
        return raw
    if question.answer_type == CHOICE:
        return _option_title(question, raw)
    if question.answer_type == MULTIPLE_CHOICE:
        chosen = list(raw) if isinstance(raw, list) else [raw]
        known = [title for option_id, title in question.options.items() if option_id in chosen]
        unknown = [_option_title(question, c) for c in chosen if not isinstance(c, int) or c not in question.options]
        return known + unknown
    if question.answer_type == MASK:
        if not mask_files:
            return None
        return mask_files[0] if len(mask_files) == 1 else list(mask_files)
    return raw


def cell(value: Any) -> str:
    """One CSV cell: text as is, lists of titles joined by ``; ``, other JSON compact, null empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "; ".join(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def socket_values(values: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A display set's values by socket slug: the image pk for an image socket, the file URL for a file socket, the
    JSON value otherwise. Reads ``interface`` as an object (GET) or a slug (POST/PATCH answers), docs/gc-api.md §3."""
    result: dict[str, Any] = {}
    for value in values:
        interface = value.get("interface")
        slug = interface.get("slug") if isinstance(interface, Mapping) else interface
        if not slug:
            continue
        if value.get("image"):
            result[str(slug)] = pk_from_url(value["image"])
        elif value.get("file"):
            result[str(slug)] = value["file"]
        else:
            result[str(slug)] = value.get("value")
    return result


@dataclass(frozen=True, kw_only=True)
class AnswerView:
    """One answer joined with its case, as the ledger hands it out (in case, reader, question order)."""

    pk: str
    question_pk: str
    display_set_pk: str | None
    case_title: str | None
    case_order: int | None
    case_values: Mapping[str, Any]
    creator: str
    created: str
    modified: str
    is_ground_truth: bool
    answer: Any
    mask_files: Sequence[str]
    last_edit_duration: str | None = None
    total_edit_duration: str | None = None

    @property
    def case(self) -> str:
        if self.display_set_pk is None:
            return NO_DISPLAY_SET
        return self.case_title or self.display_set_pk


def answer_record(view: AnswerView, question: QuestionInfo | None) -> dict[str, Any]:
    """The JSON-lines record of an answer: raw and readable values as JSON, plus the case's socket values."""
    return {
        "case": view.case,
        "display_set": view.display_set_pk,
        "display_set_order": view.case_order,
        "question": question.text if question else None,
        "answer_type": question.answer_type if question else None,
        "answer": view.answer,
        "readable_answer": readable_answer(question, view.answer, view.mask_files),
        "creator": view.creator,
        "created": view.created,
        "modified": view.modified,
        "is_ground_truth": view.is_ground_truth,
        "mask_files": list(view.mask_files),
        "answer_pk": view.pk,
        "question_pk": view.question_pk,
        "last_edit_duration": view.last_edit_duration,
        "total_edit_duration": view.total_edit_duration,
        "case_values": dict(view.case_values),
    }


def answer_row(record: Mapping[str, Any]) -> list[str]:
    """The ``answers.csv`` row of a record from :func:`answer_record`; the raw answer stays JSON so it round-trips."""
    row = []
    for column in ANSWER_COLUMNS:
        value = record[column]
        if column == "answer":
            row.append(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
        else:
            row.append(cell(value))
    return row


def wide_header(questions: Sequence[QuestionInfo], sockets: Sequence[str]) -> list[str]:
    return [
        *WIDE_KEY_COLUMNS,
        *(SOCKET_COLUMN_PREFIX + slug for slug in sockets),
        *(q.column for q in questions if q.has_answers),
    ]


def wide_rows(
    views: Iterable[AnswerView], questions: Sequence[QuestionInfo], sockets: Sequence[str]
) -> Iterator[list[str]]:
    """Rows of the per-case table from answers sorted by (case, reader, ground truth): consecutive answers of one
    case and reader make one row, so only one row is held at a time however many answers there are."""
    by_pk = {q.pk: q for q in questions}
    columns = {q.pk: index for index, q in enumerate(q for q in questions if q.has_answers)}
    key: tuple[Any, ...] | None = None
    cells: list[str] = []
    lead: list[str] = []
    for view in views:
        view_key = (view.display_set_pk, view.creator, view.is_ground_truth)
        if view_key != key:
            if key is not None:
                yield lead + cells
            key = view_key
            lead = [
                view.case,
                view.display_set_pk or "",
                cell(view.case_order),
                view.creator,
                cell(view.is_ground_truth),
                *(cell(view.case_values.get(slug)) for slug in sockets),
            ]
            cells = [""] * len(columns)
        index = columns.get(view.question_pk)
        if index is not None:
            cells[index] = cell(readable_answer(by_pk[view.question_pk], view.answer, view.mask_files))
    if key is not None:
        yield lead + cells


def display_set_row(
    pk: str, title: str, order: int | None, values: Mapping[str, Any], sockets: Sequence[str]
) -> list[str]:
    return [pk, title, cell(order), *(cell(values.get(slug)) for slug in sockets)]

"""``gcbulk export``: a reader study's questions, display sets, answers and masks, into a folder, incrementally.

One run: list the questions, the display sets and every visible answer (docs/gc-api.md §3, §4) into the export's ledger
(``state/results_ledger.py``), page by page, writing only answers that are new or whose ``modified`` changed; then
make every Mask answer's image present and verified (``engine/results/masks.py``); then rebuild the output files
(``engine/results/export_files.py``) — only when something changed or a file is missing.

Why the ledger rather than writing files as pages arrive: the API cannot list only what changed (docs/gc-api.md §4 has no
"modified since" filter), so a rerun must compare every answer with what it has; the ledger is that memory, and
rebuilding the files from it keeps them complete and free of duplicates (a modified answer replaces its old row).
It also bounds memory: one page in flight, files written from a streaming SQL query (RSS stays flat in the number
of answers; see ``benchmarks/export_scale.py``).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from gcbulk.engine.gc.client import display_set_title
from gcbulk.engine.results.answer_tables import (
    QuestionInfo,
    pk_from_url,
    questions_from_api,
    socket_values,
)
from gcbulk.engine.results.dicom_instances import DISPLAY_SET_IMAGES, display_set_image_sets
from gcbulk.engine.results.export_files import outputs_present, write_outputs
from gcbulk.engine.results.masks import DownloadLimits, MaskDownloader, MaskStats, case_component
from gcbulk.engine.results.safe_paths import relative_path, safe_component
from gcbulk.safe_files import make_private_dirs, tighten_folders
from gcbulk.state.results_ledger import ResultsLedger

log = logging.getLogger(__name__)

PAGE = 1000  # rows per ledger transaction: a page of the API (docs/gc-api.md §0: at most 1000)


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    reader_study: str
    out_dir: Path
    mine: bool = False  # answers/mine/: one's own answers only, never ground truth (docs/gc-api.md §4)
    mask_downloads: int = 8  # masks downloaded at once
    masks: bool = True  # False: answers and tables only (the Python API's answers(); `gcbulk export --no-masks`)
    download_limits: DownloadLimits = DownloadLimits()


@dataclass
class ExportSummary:
    reader_study: str
    out_dir: Path
    questions: int = 0
    display_sets: int = 0
    display_sets_changed: int = 0
    answers: int = 0
    answers_new: int = 0
    answers_modified: int = 0
    answers_unchanged: int = 0
    answers_removed: int = 0
    files_written: bool = False
    masks: MaskStats = field(default_factory=MaskStats)

    @property
    def failures(self) -> list[str]:
        return self.masks.failures

    def counts(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "display_sets": self.display_sets,
            "answers": self.answers,
            "answers_new": self.answers_new,
            "answers_modified": self.answers_modified,
            "answers_unchanged": self.answers_unchanged,
            "answers_removed": self.answers_removed,
            "masks_downloaded": self.masks.downloaded,
            "masks_skipped": self.masks.skipped,
            "masks_failed": self.masks.failed,
            "masks_resumed": self.masks.resumed,
            "mask_bytes": self.masks.bytes,
            "files_written": self.files_written,
        }

    def lines(self) -> list[str]:
        m = self.masks
        return [
            f"reader study {self.reader_study} → {self.out_dir}",
            f"  questions: {self.questions}; display sets: {self.display_sets} ({self.display_sets_changed} new or "
            "changed)",
            f"  answers: {self.answers} ({self.answers_new} new, {self.answers_modified} modified, "
            f"{self.answers_unchanged} unchanged, {self.answers_removed} no longer visible)",
            f"  masks: {m.downloaded} downloaded ({m.resumed} resumed), {m.skipped} already present, {m.failed} failed",
            "  files: " + ("rewritten" if self.files_written else "unchanged (nothing new)"),
            *(f"  failed: {failure}" for failure in self.failures),
        ]


def answer_columns(answer: dict[str, Any]) -> dict[str, Any]:
    """The ledger columns of an API answer (docs/gc-api.md §4); only the fields the export uses are read."""
    return {
        "pk": str(answer["pk"]),
        "modified": str(answer.get("modified") or answer.get("created") or ""),
        "created": answer.get("created"),
        "creator": str(answer.get("creator") or ""),
        "question_pk": pk_from_url(answer.get("question")) or "",
        "display_set_pk": pk_from_url(answer.get("display_set")),
        "is_ground_truth": int(bool(answer.get("is_ground_truth"))),
        "answer": json.dumps(answer.get("answer"), sort_keys=True),
        "answer_image_pk": pk_from_url(answer.get("answer_image")),
        "last_edit_duration": answer.get("last_edit_duration"),
        "total_edit_duration": answer.get("total_edit_duration"),
    }


def display_set_columns(display_set: dict[str, Any], position: int) -> tuple[str, int, str | None, int | None, str]:
    order = display_set.get("order")
    return (
        str(display_set["pk"]),
        position,
        display_set_title(display_set),
        order if isinstance(order, int) else None,
        json.dumps(socket_values(display_set.get("values") or []), sort_keys=True),
    )


async def export_reader_study(client: Any, options: ExportOptions) -> ExportSummary:
    """Exports the study into ``options.out_dir``; safe to run again (it resumes and only fetches what changed).

    Raises ConfigurationError (unknown study, bad token), ExportFolderTaken, LedgerLocked; per-mask failures are
    in the summary instead.
    """
    study = await client.reader_study_by_slug(options.reader_study)
    # 0700 all through: masks/<case title>/ names cases, which are often patient identifiers.
    make_private_dirs(options.out_dir)
    tighten_folders(options.out_dir)
    with ResultsLedger.open_export(
        options.out_dir, reader_study=options.reader_study, base_url=client.base_url
    ) as ledger:
        run = ledger.start_run("mine" if options.mine else "all")
        summary = ExportSummary(reader_study=options.reader_study, out_dir=options.out_dir)
        with ledger.run_recorded(run, summary.counts):
            await _export(client, ledger, run, str(study["pk"]), options, summary)
        return summary


async def _export(
    client: Any, ledger: ResultsLedger, run: int, study_pk: str, options: ExportOptions, summary: ExportSummary
) -> None:
    questions_raw = [question async for question in client.iterate_questions(study_pk)]
    questions_changed = ledger.store_questions(run, questions_raw)
    questions = questions_from_api(questions_raw)
    summary.questions = len(questions)

    await _list_display_sets(client, ledger, run, study_pk, summary)
    await _list_answers(client, ledger, run, study_pk, options.mine, summary)
    # The listings are complete: whatever was not seen is gone or no longer visible to this token.
    summary.answers_removed = ledger.forget_unseen_answers(run)
    removed_display_sets = ledger.forget_unseen_display_sets(run)
    summary.answers = ledger.answer_count()

    ledger.run_moved(run, "downloading")  # a phase of the export_run machine even when masks are not wanted
    if options.masks:
        summary.masks = await _download_masks(client, ledger, options, questions)

    ledger.run_moved(run, "writing")
    changed = (
        questions_changed
        or summary.display_sets_changed
        or removed_display_sets
        or summary.answers_new
        or summary.answers_modified
        or summary.answers_removed
        or summary.masks.downloaded
        or summary.masks.failed
    )
    if changed or ledger.previous_run_state(run) != "done" or not outputs_present(options.out_dir):
        write_outputs(ledger, questions_raw, questions, options.out_dir)
        summary.files_written = True


async def _list_display_sets(
    client: Any, ledger: ResultsLedger, run: int, study_pk: str, summary: ExportSummary
) -> None:
    batch: list[tuple[str, int, str | None, int | None, str]] = []
    async for display_set in client.iterate_display_sets(study_pk):
        batch.append(display_set_columns(display_set, summary.display_sets))
        summary.display_sets += 1
        if len(batch) >= PAGE:
            summary.display_sets_changed += ledger.store_display_sets(run, batch)
            batch = []
    summary.display_sets_changed += ledger.store_display_sets(run, batch)


async def _list_answers(
    client: Any, ledger: ResultsLedger, run: int, study_pk: str, mine: bool, summary: ExportSummary
) -> None:
    batch: list[dict[str, Any]] = []

    def store() -> None:
        stored = ledger.store_answers(run, batch)
        summary.answers_new += len(stored.new)
        summary.answers_modified += len(stored.modified)
        summary.answers_unchanged += stored.unchanged
        batch.clear()

    async for answer in client.iterate_answers(study_pk, mine=mine):
        batch.append(answer_columns(answer))
        if len(batch) >= PAGE:
            store()
    store()


async def _download_masks(
    client: Any, ledger: ResultsLedger, options: ExportOptions, questions: list[QuestionInfo]
) -> MaskStats:
    folders = {q.pk: q.folder for q in questions}
    downloader = MaskDownloader(client, ledger, options.out_dir, options.download_limits)
    image_sets = await display_set_image_sets(client, ledger)
    pending = itertools.chain(ledger.image_answers(), image_sets)
    in_image_sets = {id(answer) for answer in image_sets}

    async def worker() -> None:
        # Workers pull from one iterator: at most ``mask_downloads`` answers in flight, whatever their number.
        for answer in pending:
            if id(answer) in in_image_sets:  # a display set's DICOM Image Set: images/<case>/<socket>
                await downloader.ensure(
                    answer,
                    "",
                    base=relative_path(
                        DISPLAY_SET_IMAGES, case_component(answer), safe_component(answer.creator, fallback="socket")
                    ),
                )
                continue
            folder = folders.get(answer.question_pk) or safe_component(answer.question_pk, fallback="question")
            await downloader.ensure(answer, folder)

    async with anyio.create_task_group() as group:
        for _ in range(max(1, options.mask_downloads)):
            group.start_soon(worker)
    return downloader.stats

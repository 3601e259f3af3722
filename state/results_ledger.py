"""The results side's memory: an export's copy of the study and its mask downloads, and a reorder's progress.

It reuses ``gcbulk.state.ledger.Ledger`` whole — its file created 0600, the process lock, WAL and its sync rules, the
migrations, the job binding and the append-only event log — and adds the tables of migration
``m003_results_export_and_reorder`` and the machines ``export_run``, ``mask`` and ``reorder_item`` of
``gcbulk.state.machines`` (checked by the same ``check_transition``).

Where the ledgers live, and what they are bound to:

* an **export** ledger is ``<export folder>/.gcbulk/ledger.sqlite``: it travels with the files it describes (mask
  paths in it are relative to the folder, so the folder may be moved), and it is bound to the server and the reader
  study, so exporting another study or server into the same folder is refused instead of mixing them. The binding's
  case root is the constant ``EXPORT_ROOT`` (an export has no case tree);
* a **reorder** ledger: see ``state/reorder_ledger.py``.

Incremental export: an answer is stored with its ``modified``; a run lists every answer (the API has no "changed
since" filter, docs/gc-api.md §4) and writes only the new and modified ones, marks the others seen, and, once the listing is
complete, forgets the answers it did not see (deleted, or no longer visible to this token). Output files are rebuilt
from these tables, so they are always complete.

Use from one thread (the event loop's), like the ledger itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcbulk.state.ledger import (
    JobBinding,
    Ledger,
    LedgerBindingError,
    LedgerError,
    UnknownRow,
)
from gcbulk.state.mask_records import MaskRecords

EXPORT_DIR = ".gcbulk"
EXPORT_LEDGER_NAME = "ledger.sqlite"
EXPORT_ROOT = "(export folder: paths are relative to the folder holding .gcbulk/)"
_BATCH = 1000


# The binding has one field for what an export reads: a reader study's slug, or ``archive:<slug>`` for an archive.
# Slugs hold no colon, so an archive's binding never names a study.
ARCHIVE_SOURCE = "archive:"
# A copy across servers stages the source's image files in a folder of its own, with this ledger beside them
# (``engine/service/copy_bytes.py``): bound to ``copy-staging:<source>`` on the source's server.
COPY_STAGING_SOURCE = "copy-staging:"


def _source_name(source: str) -> str:
    if source.startswith(COPY_STAGING_SOURCE):
        return f"the staged files of a copy of {source.removeprefix(COPY_STAGING_SOURCE)}"
    if source.startswith(ARCHIVE_SOURCE):
        return f"archive {source.removeprefix(ARCHIVE_SOURCE)!r}"
    return f"reader study {source!r}"


class ExportFolderTaken(LedgerError):
    """The output folder holds an export of another study, archive or server."""


@dataclass(frozen=True, kw_only=True)
class StoredAnswers:
    """What one page of the answer listing changed."""

    new: list[str]
    modified: list[str]
    unchanged: int


@dataclass(frozen=True, kw_only=True)
class ImageAnswer:
    """An answer that has an image (a Mask answer), with what its mask path is made of."""

    answer_pk: str
    image_pk: str
    creator: str
    is_ground_truth: bool
    question_pk: str
    display_set_pk: str | None
    case_title: str | None


def export_ledger_path(out_dir: Path) -> Path:
    return out_dir / EXPORT_DIR / EXPORT_LEDGER_NAME


class ResultsLedger(MaskRecords):
    """The ledger of one export folder: ``with ResultsLedger.open_export(folder, ...) as ledger:``."""

    @classmethod
    def open_export(cls, out_dir: Path, *, reader_study: str, base_url: str) -> ResultsLedger:
        return cls._open_bound(out_dir, reader_study, base_url)

    @classmethod
    def open_archive_export(cls, out_dir: Path, *, archive: str, base_url: str) -> ResultsLedger:
        """The ledger of an archive's export folder (``engine/results/archive_export.py``)."""
        return cls._open_bound(out_dir, ARCHIVE_SOURCE + archive, base_url)

    @classmethod
    def open_copy_staging(cls, staging: Path, *, source: str, base_url: str) -> ResultsLedger:
        """The ledger of a copy's staging folder: which source files are downloaded and verified (``source``: the
        copy's source, e.g. ``archive "slug"``, on the server at ``base_url``)."""
        return cls._open_bound(staging, COPY_STAGING_SOURCE + source, base_url)

    @classmethod
    def _open_bound(cls, out_dir: Path, source: str, base_url: str) -> ResultsLedger:
        folder = out_dir / EXPORT_DIR
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        binding = JobBinding(reader_study=source, base_url=base_url, case_root=EXPORT_ROOT)
        try:
            return cls(Ledger.open(folder / EXPORT_LEDGER_NAME, binding))
        except LedgerBindingError:
            with Ledger.open_readonly(folder / EXPORT_LEDGER_NAME) as other:
                job = other.job or {}
            raise ExportFolderTaken(
                f"{out_dir} already holds an export of {_source_name(str(job.get('reader_study')))} from "
                f"{job.get('base_url')!r}; export {_source_name(source)} from {base_url!r} into another folder (--out)"
            ) from None

    # ------------------------------------------------------------------------------------------------ export runs
    def start_run(self, scope: str) -> int:
        with self.db.atomic():
            now = self.now()
            cursor = self.db.execute(
                "INSERT INTO export_runs (state, scope, started_at, updated_at) VALUES ('listing', ?, ?, ?)",
                (scope, now, now),
            )
            run_id = cursor.lastrowid
            assert run_id is not None  # an INSERT's new row
            self.ledger.record_event(
                "export_run.listing", subject="export_run", subject_id=run_id, data={"scope": scope}
            )
        return run_id

    def run_moved(self, run_id: int, target: str, counts: dict[str, Any] | None = None) -> bool:
        fields: dict[str, Any] = {}
        if counts is not None:
            fields["counts"] = json.dumps(counts, sort_keys=True)
        if target in ("done", "failed"):
            fields["finished_at"] = self.now()
        return self._transition("export_run", "export_runs", "id", run_id, target, **fields)

    @contextmanager
    def run_recorded(self, run_id: int, counts: Callable[[], dict[str, Any]]) -> Iterator[None]:
        """Records how the export run inside the block ends, with ``counts()`` as they stand then: ``failed`` on any
        exception (an interruption included, so a killed export never reads as done), ``done`` otherwise."""
        try:
            yield
        except BaseException:
            self.run_moved(run_id, "failed", counts())
            raise
        self.run_moved(run_id, "done", counts())

    def run(self, run_id: int) -> dict[str, Any]:
        row = self.row("SELECT * FROM export_runs WHERE id = ?", (run_id,))
        if row is None:
            raise UnknownRow(f"the ledger has no export run {run_id}")
        row["counts"] = json.loads(row["counts"]) if row["counts"] else {}
        return row

    # -------------------------------------------------------------------------------------------------- questions
    def store_questions(self, run_id: int, questions: Sequence[dict[str, Any]]) -> bool:
        """Replaces the stored questions; True when anything differs from before."""
        with self.db.atomic():
            before = {r["pk"]: (r["position"], r["data"]) for r in self.rows("SELECT * FROM export_questions")}
            after = {str(q["pk"]): (position, json.dumps(q, sort_keys=True)) for position, q in enumerate(questions)}
            if before == after:
                return False
            self.db.execute("DELETE FROM export_questions")
            self.db.conn.executemany(
                "INSERT INTO export_questions (pk, position, data, seen_run) VALUES (?, ?, ?, ?)",
                [(pk, position, data, run_id) for pk, (position, data) in after.items()],
            )
        return True

    def questions(self) -> list[dict[str, Any]]:
        return [json.loads(r["data"]) for r in self.rows("SELECT data FROM export_questions ORDER BY position")]

    # ----------------------------------------------------------------------------------------------- display sets
    def store_display_sets(self, run_id: int, rows: Sequence[tuple[str, int, str | None, int | None, str]]) -> int:
        """Upserts ``(pk, position, title, order, socket values JSON)`` rows; returns how many were new or changed."""
        if not rows:
            return 0
        with self.db.atomic():
            placeholders = ",".join("?" * len(rows))
            stored = {
                r["pk"]: (r["position"], r["title"], r["sort_order"], r["socket_values"])
                for r in self.rows(
                    f"SELECT pk, position, title, sort_order, socket_values FROM export_display_sets "
                    f"WHERE pk IN ({placeholders})",
                    [row[0] for row in rows],
                )
            }
            changed = [row for row in rows if stored.get(row[0]) != tuple(row[1:])]
            self.db.conn.executemany(
                "INSERT INTO export_display_sets (pk, position, title, sort_order, socket_values, seen_run) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(pk) DO UPDATE SET position = excluded.position, "
                "title = excluded.title, sort_order = excluded.sort_order, socket_values = excluded.socket_values, "
                "seen_run = excluded.seen_run",
                [(*row, run_id) for row in rows],
            )
        return len(changed)

    def forget_unseen_display_sets(self, run_id: int) -> int:
        with self.db.atomic():
            return self.db.execute("DELETE FROM export_display_sets WHERE seen_run != ?", (run_id,)).rowcount

    def socket_slugs(self) -> list[str]:
        slugs: set[str] = set()
        for row in self.db.conn.execute("SELECT socket_values FROM export_display_sets"):
            slugs.update(json.loads(row[0] or "{}"))
        return sorted(slugs)

    def iter_display_sets(self) -> Iterator[dict[str, Any]]:
        cursor = self.db.conn.execute(
            "SELECT pk, title, sort_order, socket_values FROM export_display_sets ORDER BY position"
        )
        while batch := cursor.fetchmany(_BATCH):
            for pk, title, order, values in batch:
                yield {"pk": pk, "title": title, "order": order, "values": json.loads(values or "{}")}

    # ---------------------------------------------------------------------------------------------------- answers
    def store_answers(self, run_id: int, answers: Sequence[dict[str, Any]]) -> StoredAnswers:
        """One page of the listing, in one transaction: new and modified answers are written whole, the others only
        marked as seen. ``answers`` are dicts with the columns of ``export_answers`` (``answer`` as JSON text)."""
        if not answers:
            return StoredAnswers(new=[], modified=[], unchanged=0)
        with self.db.atomic():
            placeholders = ",".join("?" * len(answers))
            # The image counts as a change too: a Mask answer gets its image when the import finishes, which need
            # not touch 'modified'.
            stored = {
                pk: (modified, image)
                for pk, modified, image in self.db.conn.execute(
                    f"SELECT pk, modified, answer_image_pk FROM export_answers WHERE pk IN ({placeholders})",
                    [a["pk"] for a in answers],
                )
            }
            new = [a for a in answers if a["pk"] not in stored]
            same = {a["pk"] for a in answers if stored.get(a["pk"]) == (a["modified"], a["answer_image_pk"])}
            modified = [a for a in answers if a["pk"] in stored and a["pk"] not in same]
            unchanged = list(same)
            written = new + modified
            if written:
                columns = (
                    "pk",
                    "modified",
                    "created",
                    "creator",
                    "question_pk",
                    "display_set_pk",
                    "is_ground_truth",
                    "answer",
                    "answer_image_pk",
                    "last_edit_duration",
                    "total_edit_duration",
                )
                self.db.conn.executemany(
                    f"INSERT INTO export_answers ({', '.join(columns)}, seen_run, changed_run) "
                    f"VALUES ({', '.join('?' * len(columns))}, ?, ?) ON CONFLICT(pk) DO UPDATE SET "
                    + ", ".join(f"{c} = excluded.{c}" for c in (*columns[1:], "seen_run", "changed_run")),
                    [(*(a[c] for c in columns), run_id, run_id) for a in written],
                )
            self.db.conn.executemany(
                "UPDATE export_answers SET seen_run = ? WHERE pk = ?", [(run_id, pk) for pk in unchanged]
            )
        return StoredAnswers(new=[a["pk"] for a in new], modified=[a["pk"] for a in modified], unchanged=len(unchanged))

    def forget_unseen_answers(self, run_id: int) -> int:
        """After a complete listing: drops answers this run did not see. Their mask rows stay (files are never
        deleted), so an answer that comes back with the same image is not downloaded again."""
        with self.db.atomic():
            removed = self.db.execute("DELETE FROM export_answers WHERE seen_run != ?", (run_id,)).rowcount
            if removed:
                self.ledger.record_event(
                    "export.answers_forgotten", subject="export_run", subject_id=run_id, data={"answers": removed}
                )
        return removed

    def previous_run_state(self, run_id: int) -> str | None:
        """The state of the run before ``run_id`` (None for the first): outputs are current only after a ``done``."""
        row = self.row("SELECT state FROM export_runs WHERE id < ? ORDER BY id DESC LIMIT 1", (run_id,))
        return None if row is None else row["state"]

    def answer_count(self) -> int:
        return int(self.ledger.scalar("SELECT count(*) FROM export_answers"))

    def image_answers(self) -> list[ImageAnswer]:
        """Every answer with an image, with its case title (for the mask paths)."""
        rows = self.db.conn.execute(
            "SELECT a.pk, a.answer_image_pk, a.creator, a.is_ground_truth, a.question_pk, a.display_set_pk, d.title "
            "FROM export_answers a LEFT JOIN export_display_sets d ON d.pk = a.display_set_pk "
            "WHERE a.answer_image_pk IS NOT NULL ORDER BY a.pk"
        ).fetchall()
        return [
            ImageAnswer(
                answer_pk=r[0],
                image_pk=r[1],
                creator=r[2],
                is_ground_truth=bool(r[3]),
                question_pk=r[4],
                display_set_pk=r[5],
                case_title=r[6],
            )
            for r in rows
        ]

    def iter_answer_rows(self) -> Iterator[dict[str, Any]]:
        """Answers joined with their display set and verified mask paths, in the order of the per-case table:
        display-set order, then reader, ground truth last, then question order. Streams in batches."""
        cursor = self.db.conn.execute(
            "SELECT a.pk, a.question_pk, a.display_set_pk, d.title, d.sort_order, d.socket_values, a.creator, "
            "a.created, a.modified, a.is_ground_truth, a.answer, a.last_edit_duration, a.total_edit_duration, "
            "(SELECT group_concat(m.path, char(10)) FROM (SELECT path FROM export_masks m "
            "  WHERE m.answer_pk = a.pk AND m.image_pk = a.answer_image_pk AND m.state = 'verified' ORDER BY path) m)"
            " FROM export_answers a LEFT JOIN export_display_sets d ON d.pk = a.display_set_pk "
            "LEFT JOIN export_questions q ON q.pk = a.question_pk "
            "ORDER BY d.position IS NULL, d.position, a.display_set_pk, a.creator, a.is_ground_truth, q.position, "
            "a.created, a.pk"
        )
        names = [d[0] for d in cursor.description]
        names[-1] = "mask_paths"
        while batch := cursor.fetchmany(_BATCH):
            for values in batch:
                yield dict(zip(names, values, strict=True))

"""Recording a plan in the ledger: the diff of a freshly walked case tree against what the ledger remembers.

Re-planning the same tree is idempotent. A new case is added; an unchanged file keeps its state (and its uploads);
a file that changed (size, then mtime confirmed by checksum when one is known) is re-queued — its unfinished uploads
abandoned — unless Grand Challenge has already consumed it, which is only reported. A case whose folder vanished is
marked ``vanished`` and reported; nothing is ever deleted on the server.

The recorder takes planned cases by duck typing, so ``state`` does not depend on ``engine``:

* case: ``title``, ``folder`` (relative to the case root), ``items``, ``findings``
* item: ``socket_slug``, ``super_kind`` (``"Image"``/``"File"``/``"Value"`` or None), ``value_json`` (str or None),
  ``files``
* file: ``path`` (relative to the case root, ``/``-separated), ``name``, ``size``, ``mtime_ns``
* finding: ``blocking`` (bool) and ``as_dict()``
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gcbulk.state.machines import CONSUMED_ITEM_STATES
from gcbulk.state.records import PlanDiff, PlannedCaseShape, PlannedFileShape, PlannedItemShape

if TYPE_CHECKING:
    from gcbulk.state.ledger import Ledger

_BLOCKABLE = frozenset({"planned", "running", "failed", "vanished"})
_VANISHABLE = frozenset({"planned", "running", "failed", "blocked"})


class PlannedTitles:
    """The titles seen in the current plan, as a set-like object kept in a SQLite temp table.

    A Python set of a million titles would grow with the tree; a temp table keeps the planner's memory flat.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._conn = ledger.db.conn

    def __contains__(self, title: object) -> bool:
        return self._conn.execute("SELECT 1 FROM plan_titles WHERE title = ?", (title,)).fetchone() is not None

    def add(self, title: str) -> None:
        self._conn.execute("INSERT INTO plan_titles (title) VALUES (?) ON CONFLICT DO NOTHING", (title,))


class PlanRecorder:
    """Streams planned cases into the ledger in batches of about ``batch_files`` files per transaction."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        checksum: Callable[[Path, int], str] | None,
        dry_run: bool,
        batch_files: int,
        fingerprint: Callable[[Path, int], tuple[str, int]] | None = None,
    ) -> None:
        self.ledger = ledger
        self.db = ledger.db
        self.conn = ledger.db.conn
        self.checksum = checksum
        # (path, size) -> (checksum, part size) of a file's bytes as planned: recorded for each new or changed file, so
        # the upload can prove that the bytes it sent are the bytes planned (and checked), not only the size and mtime.
        self.fingerprint = fingerprint
        self.dry_run = dry_run
        self.batch_files = batch_files
        self.diff = PlanDiff()
        self.titles = PlannedTitles(ledger)
        self._files_in_batch = 0
        self._finished = False
        self._root = ledger.case_root
        self._batch_time = ledger.now()

    # ----------------------------------------------------------------------------------------------- lifecycle
    def start(self, *, rules: dict[str, Any] | None, job_file: Path | str | None) -> None:
        with self.db.atomic():
            self.ledger.transition("job", 1, "planning")
            self.db.execute(
                "UPDATE job SET rules = ?, job_file = coalesce(?, job_file), plan_started_at = ?, "
                "plan_finished_at = NULL WHERE id = 1",
                (
                    json.dumps(rules, sort_keys=True) if rules is not None else None,
                    None if job_file is None else str(Path(job_file).absolute()),
                    self.ledger.now(),
                ),
            )
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS plan_seen (case_id INTEGER PRIMARY KEY)")
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS plan_titles (title TEXT PRIMARY KEY)")
            self.db.execute("DELETE FROM plan_seen")
            self.db.execute("DELETE FROM plan_titles")

    def _ensure_batch(self) -> None:
        if not self.conn.in_transaction:
            self.db.begin()

    def commit(self) -> None:
        if not self.dry_run:
            self.db.commit()
        self._files_in_batch = 0
        # Rows written in one batch share its timestamp: formatting the clock per case costs more than the insert.
        self._batch_time = self.ledger.now()

    def add(self, case: PlannedCaseShape) -> None:
        """Record one planned case (its own savepoint: a failure leaves no half-recorded case)."""
        if self._finished:
            raise RuntimeError("this plan is finished; open a new one with planning(ledger)")
        self._ensure_batch()
        with self.db.atomic():
            self._record_case(case)
        self._files_in_batch += sum(len(item.files) for item in case.items)
        if self._files_in_batch >= self.batch_files:
            self.commit()

    def finish(self, *, blocked: bool = False) -> PlanDiff:
        """Mark the cases not seen in this plan as vanished and the plan complete, or ``blocked`` (nothing may run: a
        finding about the whole job, or all-or-nothing was asked for); return the diff. Cases with blocking findings
        are already ``blocked`` one by one and do not hold back the others."""
        self._ensure_batch()
        with self.db.atomic():
            self._mark_vanished()
            self.ledger.transition("job", 1, "blocked" if blocked else "complete")
            self.db.execute("UPDATE job SET plan_finished_at = ? WHERE id = 1", (self.ledger.now(),))
            summary = self.diff.as_dict()
            self.ledger.record_event(
                "plan.recorded",
                subject="job",
                subject_id=1,
                data={
                    **{k: summary[k] for k in ("cases", "files", "bytes", "new_cases", "files_to_upload")},
                    "requeued": len(self.diff.requeued),
                    "changed_after_consumed": len(self.diff.changed_after_consumed),
                    "removed": len(self.diff.removed),
                    "blocked": len(self.diff.blocked),
                },
            )
        self.commit()
        self._finished = True
        return self.diff

    # ---------------------------------------------------------------------------------------------------- cases
    def _record_case(self, case: PlannedCaseShape) -> None:
        # Info findings (e.g. files left out by an ignore pattern) are printed by the plan, not kept per case.
        findings = [finding.as_dict() for finding in case.findings if getattr(finding, "severity", None) != "info"]
        blocking = any(finding.blocking for finding in case.findings)
        diff = self.diff
        diff.cases += 1
        for item in case.items:
            for file in item.files:
                diff.files += 1
                diff.bytes += file.size
                diff.largest_file = max(diff.largest_file, file.size)
        row = self.ledger.row("SELECT id, state, folder, findings FROM cases WHERE title = ?", (case.title,))
        if row is not None and self._seen(row["id"]):
            self._record_duplicate(row, case.title, findings)
            return
        if row is None:
            case_id = self._insert_case(case, findings, blocking)
        else:
            case_id = row["id"]
            self._update_case(row, case, findings, blocking)
        self.conn.execute("INSERT INTO plan_seen (case_id) VALUES (?)", (case_id,))

    def _seen(self, case_id: int) -> bool:
        return self.conn.execute("SELECT 1 FROM plan_seen WHERE case_id = ?", (case_id,)).fetchone() is not None

    def _record_duplicate(self, row: dict[str, Any], title: str, findings: list[dict[str, Any]]) -> None:
        # docs/gc-api.md §3: the title is unique per reader study and is our idempotency key, so two folders with one title
        # would fight over one display set. Block the first as well; the user must make the titles unique.
        self.diff.duplicate_titles.append(title)
        merged = (json.loads(row["findings"]) if row["findings"] else []) + findings
        self.conn.execute("UPDATE cases SET findings = ? WHERE id = ?", (json.dumps(merged), row["id"]))
        if row["state"] in _BLOCKABLE:
            self.ledger.transition("case", row["id"], "blocked")
        if row["state"] in _BLOCKABLE or row["state"] == "blocked":
            if title not in self.diff.blocked:
                self.diff.blocked.append(title)

    def _insert_case(self, case: PlannedCaseShape, findings: list[dict[str, Any]], blocking: bool) -> int:
        now = self._batch_time
        state = "blocked" if blocking else "planned"
        case_id = self.conn.execute(
            "INSERT INTO cases (title, folder, state, attempts, findings, created_at, updated_at) "
            "VALUES (?, ?, ?, 0, ?, ?, ?)",
            (case.title, case.folder, state, json.dumps(findings) if findings else None, now, now),
        ).lastrowid
        assert case_id is not None  # an INSERT's new row
        self.conn.execute(
            "INSERT INTO display_sets (case_id, state, attempts, created_at, updated_at) "
            "VALUES (?, 'pending', 0, ?, ?)",
            (case_id, now, now),
        )
        for item in case.items:
            self._insert_item(case_id, item, now)
            self._count_upload(item)
        self.diff.new_cases += 1
        if blocking:
            self.diff.blocked.append(case.title)
        return case_id

    def _insert_item(self, case_id: int, item: PlannedItemShape, now: str) -> None:
        item_id = self.conn.execute(
            "INSERT INTO items (case_id, socket_slug, super_kind, value, state, attempts, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, 'planned', 0, ?, ?)",
            (case_id, item.socket_slug, item.super_kind, item.value_json, now, now),
        ).lastrowid
        self.conn.executemany(
            "INSERT INTO files (item_id, position, path, name, size, mtime_ns, checksum, checksum_part_size, present, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
            [
                (item_id, position, f.path, f.name, f.size, f.mtime_ns, *self._fingerprint(f), now, now)
                for position, f in enumerate(item.files)
            ],
        )

    def files_to_fingerprint(self, cases: Sequence[PlannedCaseShape], *, min_size: int = 0) -> list[tuple[Path, int]]:
        """The files of ``cases`` (of at least ``min_size`` bytes), not yet added, that this plan will fingerprint as
        the ledger stands now: ``(the path fingerprint is called with, the planned size)``, so a caller can compute
        them ahead on other threads.

        They are the files of new cases and new items, and the files whose size or mtime the ledger does not hold (new
        or changed) in items Grand Challenge has not consumed: never an unchanged file, so a re-plan of an unchanged
        tree reads none. A file fingerprinted without being named here (an unchanged file of a re-queued item, a
        duplicate title's, a smaller one) is computed when it is recorded, as before. Empty when this plan records no
        fingerprint."""
        if self.fingerprint is None:
            return []
        # Asked for every window of cases a plan reads: without a file big enough, it costs no query.
        titles = list({case.title for case in cases if any(f.size >= min_size for i in case.items for f in i.files)})
        if not titles:
            return []
        recorded_items: dict[tuple[str, str], str] = {}
        recorded_files: dict[tuple[str, str, str], tuple[int, int]] = {}
        # One query per chunk of titles, not one per case: this runs for every window of cases a plan reads ahead.
        for start in range(0, len(titles), 500):
            chunk = titles[start : start + 500]
            # Tuples, not the dicts of ledger.rows(): a re-plan reads every file's row here once more.
            for title, socket_slug, state, path, size, mtime_ns in self.conn.execute(
                "SELECT cases.title, items.socket_slug, items.state, files.path, files.size, files.mtime_ns "
                "FROM cases JOIN items ON items.case_id = cases.id "
                "LEFT JOIN files ON files.item_id = items.id AND files.present = 1 "
                f"WHERE cases.title IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall():
                recorded_items[title, socket_slug] = state
                if path is not None:
                    recorded_files[title, socket_slug, path] = (size, mtime_ns)
        wanted: list[tuple[Path, int]] = []
        for case in cases:
            for item in case.items:
                if recorded_items.get((case.title, item.socket_slug)) in CONSUMED_ITEM_STATES:
                    continue  # a change there is only reported (``changed_after_consumed``), never recorded
                wanted.extend(
                    (self._root / file.path, file.size)
                    for file in item.files
                    if file.size >= min_size
                    and recorded_files.get((case.title, item.socket_slug, file.path)) != (file.size, file.mtime_ns)
                )
        return wanted

    def _fingerprint(self, file: PlannedFileShape) -> tuple[str | None, int | None]:
        if self.fingerprint is None:
            return None, None
        try:
            return self.fingerprint(self._root / file.path, file.size)
        except OSError:
            return None, None  # unreadable now: the upload's own read fails with its reason

    def _count_upload(self, item: PlannedItemShape) -> None:
        self.diff.files_to_upload += len(item.files)
        self.diff.bytes_to_upload += sum(f.size for f in item.files)

    def _update_case(
        self, row: dict[str, Any], case: PlannedCaseShape, findings: list[dict[str, Any]], blocking: bool
    ) -> None:
        case_id, state = row["id"], row["state"]
        now = self._batch_time
        existing = {r["socket_slug"]: r for r in self.ledger.rows("SELECT * FROM items WHERE case_id = ?", (case_id,))}
        files_by_item: dict[int, list[dict[str, Any]]] = {}
        for f in self.ledger.rows(
            "SELECT files.* FROM files JOIN items ON items.id = files.item_id WHERE items.case_id = ? "
            "ORDER BY files.position",
            (case_id,),
        ):
            files_by_item.setdefault(f["item_id"], []).append(f)
        requeue = False
        changed = False
        for item in case.items:
            old = existing.pop(item.socket_slug, None)
            if old is None:
                self._insert_item(case_id, item, now)
                self._count_upload(item)
                requeue = changed = True
                continue
            if item.super_kind is not None and item.super_kind != old["super_kind"]:
                self.conn.execute("UPDATE items SET super_kind = ? WHERE id = ?", (item.super_kind, old["id"]))
            old_files = files_by_item.get(old["id"], [])
            change = self._item_change(old, item, old_files)
            if change is None:
                if old["state"] not in CONSUMED_ITEM_STATES:
                    self._count_upload(item)
                continue
            if old["state"] in CONSUMED_ITEM_STATES:
                self.diff.changed_after_consumed.append((case.title, item.socket_slug, change))
                continue
            self._requeue_item(old, item, old_files, now)
            self._count_upload(item)
            requeue = changed = True
        for old in existing.values():
            if old["state"] == "withdrawn":
                continue
            if old["state"] in CONSUMED_ITEM_STATES:
                self.diff.changed_after_consumed.append(
                    (case.title, old["socket_slug"], "no longer in the case folder")
                )
                continue
            self._withdraw_item(old, files_by_item.get(old["id"], []), now)
            changed = True

        findings_json = json.dumps(findings) if findings else None
        if findings_json != row["findings"] or case.folder != row["folder"]:
            self.conn.execute(
                "UPDATE cases SET findings = ?, folder = ?, updated_at = ? WHERE id = ?",
                (findings_json, case.folder, now, case_id),
            )
        if blocking:
            # A done case stays done (Grand Challenge has it); its new files wait until the findings are fixed.
            if state in _BLOCKABLE:
                self.ledger.transition("case", case_id, "blocked")
            self.diff.blocked.append(case.title)
            return
        if state == "done" and not requeue:
            # New values recorded while the case was blocked still need a run.
            requeue = (
                self.ledger.row(
                    "SELECT 1 FROM items WHERE case_id = ? AND state IN ('planned', 'uploading', 'uploaded', 'failed')",
                    (case_id,),
                )
                is not None
            )
        if requeue and state != "planned":
            self.ledger.requeue_case(case_id)
        elif state in ("blocked", "vanished"):
            self.ledger.transition("case", case_id, "planned")
        if changed:
            self.diff.requeued.append(case.title)
        else:
            self.diff.unchanged[self.ledger.scalar("SELECT state FROM cases WHERE id = ?", (case_id,))] += 1

    # ---------------------------------------------------------------------------------------------------- items
    def _item_change(
        self, old: dict[str, Any], item: PlannedItemShape, old_files: Sequence[dict[str, Any]]
    ) -> str | None:
        """What changed in an item since the ledger recorded it, or None. Refreshes mtimes of touched-only files."""
        if item.value_json is not None or old["value"] is not None:
            return None if item.value_json == old["value"] else "value changed"
        present = {f["path"]: f for f in old_files if f["present"]}
        planned = {f.path: f for f in item.files}
        if present.keys() != planned.keys():
            added = sorted(planned.keys() - present.keys())
            removed = sorted(present.keys() - planned.keys())
            parts = [f"+{p}" for p in added] + [f"-{p}" for p in removed]
            return "files " + ", ".join(parts)
        touched = []
        for path, new in planned.items():
            old_file = present[path]
            if old_file["size"] != new.size:
                return f"{path}: size {old_file['size']} -> {new.size} bytes"
            if old_file["mtime_ns"] == new.mtime_ns:
                if (
                    old["state"] == "failed"
                    and old_file["checksum"]
                    and old_file["checksum_part_size"]
                    and self.checksum
                ):
                    # A failed item is read again: its bytes may have changed under a restored mtime (the upload
                    # found them not to be the bytes planned and asked for a new plan).
                    try:
                        same = self.checksum(self._root / path, old_file["checksum_part_size"]) == old_file["checksum"]
                    except OSError as exc:
                        return f"{path}: cannot be read to compare its checksum ({exc.strerror or exc})"
                    if not same:
                        return f"{path}: its bytes changed (its size and mtime did not)"
                continue
            if old_file["checksum"] and old_file["checksum_part_size"] and self.checksum is not None:
                try:
                    same = self.checksum(self._root / path, old_file["checksum_part_size"]) == old_file["checksum"]
                except OSError as exc:
                    return f"{path}: cannot be read to compare its checksum ({exc.strerror or exc})"
                if same:
                    touched.append((new.mtime_ns, old_file["id"]))
                    continue
            return f"{path}: modified"
        if touched:
            self.conn.executemany("UPDATE files SET mtime_ns = ? WHERE id = ?", touched)
        return None

    def _abandon_uploads(self, file_id: int, reason: str) -> None:
        for upload in self.ledger.rows(
            "SELECT id FROM uploads WHERE file_id = ? AND state IN ('creating', 'initialized', 'completed')",
            (file_id,),
        ):
            self.ledger.upload_abandoned(upload["id"], reason)

    def _requeue_item(
        self, old: dict[str, Any], item: PlannedItemShape, old_files: Sequence[dict[str, Any]], now: str
    ) -> None:
        by_path = {f["path"]: f for f in old_files}
        planned = {f.path: f for f in item.files}
        for f in old_files:
            new = planned.get(f["path"])
            same = new is not None and f["present"] and new.size == f["size"] and new.mtime_ns == f["mtime_ns"]
            if f["present"] and not same:
                self._abandon_uploads(f["id"], "the file changed before Grand Challenge took it")
            if new is None and f["present"]:
                self.conn.execute("UPDATE files SET present = 0, updated_at = ? WHERE id = ?", (now, f["id"]))
        for position, new in enumerate(item.files):
            known = by_path.get(new.path)
            if known is None:
                self.conn.execute(
                    "INSERT INTO files (item_id, position, path, name, size, mtime_ns, checksum, checksum_part_size, "
                    "present, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                    (
                        old["id"],
                        position,
                        new.path,
                        new.name,
                        new.size,
                        new.mtime_ns,
                        *self._fingerprint(new),
                        now,
                        now,
                    ),
                )
                continue
            if self.fingerprint is not None:  # a re-queued item's files are fingerprinted again, as planned now
                checksum, part_size = self._fingerprint(new)
                self.conn.execute(
                    "UPDATE files SET present = 1, position = ?, size = ?, mtime_ns = ?, checksum = ?, "
                    "checksum_part_size = ?, updated_at = ? WHERE id = ?",
                    (position, new.size, new.mtime_ns, checksum, part_size, now, known["id"]),
                )
                continue
            content_same = new.size == known["size"] and new.mtime_ns == known["mtime_ns"]
            self.conn.execute(
                "UPDATE files SET present = 1, position = ?, size = ?, mtime_ns = ?, "
                "checksum = CASE WHEN ? THEN checksum END, checksum_part_size = CASE WHEN ? THEN checksum_part_size "
                "END, updated_at = ? WHERE id = ?",
                (position, new.size, new.mtime_ns, content_same, content_same, now, known["id"]),
            )
        if item.value_json != old["value"]:
            self.conn.execute("UPDATE items SET value = ? WHERE id = ?", (item.value_json, old["id"]))
        if old["state"] != "planned":
            self.ledger.transition("item", old["id"], "planned", attempts=0, last_error=None, upload_session_pk=None)

    def _withdraw_item(self, old: dict[str, Any], old_files: Sequence[dict[str, Any]], now: str) -> None:
        for f in old_files:
            if f["present"]:
                self._abandon_uploads(f["id"], "the file is no longer in the case folder")
                self.conn.execute("UPDATE files SET present = 0, updated_at = ? WHERE id = ?", (now, f["id"]))
        self.ledger.transition("item", old["id"], "withdrawn")

    # ------------------------------------------------------------------------------------------------- vanished
    def _mark_vanished(self) -> None:
        for row in self.ledger.rows(
            "SELECT id, title, state FROM cases WHERE id NOT IN (SELECT case_id FROM plan_seen) ORDER BY id"
        ):
            if row["state"] in _VANISHABLE:
                self.ledger.transition("case", row["id"], "vanished")
            self.diff.removed.append((row["title"], row["state"]))


@contextmanager
def planning(
    ledger: Ledger,
    *,
    rules: dict[str, Any] | None = None,
    job_file: Path | str | None = None,
    checksum: Callable[[Path, int], str] | None = None,
    dry_run: bool = False,
    batch_files: int = 5000,
    fingerprint: Callable[[Path, int], tuple[str, int]] | None = None,
) -> Iterator[PlanRecorder]:
    """Record a plan, case by case; see ``gcbulk.state.replan.PlanRecorder``. A dry run rolls everything back.

    One planner at a time: workers sharing a ledger wait for the plan in progress, then re-plan, which records
    nothing new when the tree has not changed (``LedgerWorkers.planning_lock``)."""
    with ledger.planning_lock():
        yield from _planning(
            ledger,
            rules=rules,
            job_file=job_file,
            checksum=checksum,
            dry_run=dry_run,
            batch_files=batch_files,
            fingerprint=fingerprint,
        )


def _planning(
    ledger: Ledger,
    *,
    rules: dict[str, Any] | None,
    job_file: Path | str | None,
    checksum: Callable[[Path, int], str] | None,
    dry_run: bool,
    batch_files: int,
    fingerprint: Callable[[Path, int], tuple[str, int]] | None = None,
) -> Iterator[PlanRecorder]:
    recorder = PlanRecorder(
        ledger, checksum=checksum, dry_run=dry_run, batch_files=batch_files, fingerprint=fingerprint
    )
    if dry_run:
        # The same code path as a real plan, inside one transaction that is rolled back: the diff a dry run
        # prints is exactly what the real plan would record.
        try:
            with ledger.db.atomic():
                recorder.start(rules=rules, job_file=job_file)
                yield recorder
                raise _RollBack
        except _RollBack:
            pass
        return
    recorder.start(rules=rules, job_file=job_file)
    try:
        yield recorder
    except BaseException:
        ledger.db.rollback()  # only the open batch; committed batches stay and the job stays 'planning'
        raise
    recorder.commit()


class _RollBack(Exception):
    """Raised inside a dry-run transaction to undo it."""

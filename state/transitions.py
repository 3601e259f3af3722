"""The named state changes of the ledger's objects: one method per step the transfer engine takes.

Each is a thin, documented wrapper over ``Ledger.transition`` (the single place where ``gcbulk.state.machines`` is
enforced); the few that touch more than one row (``item_attached``, ``upload_completed``, ``requeue_case``) do so in
one transaction. A layer of the ledger over its event log and its queries (``gcbulk.state.ledger_core``); it also
holds the transition core every named transition goes through (``transition``, ``_apply``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

from gcbulk.checksums import composite_checksum
from gcbulk.redaction import redact
from gcbulk.state.errors import LedgerError, LiveUploadExists, UnknownRow, UploadNotOpen
from gcbulk.state.event_log import LedgerEvents
from gcbulk.state.ledger_core import TABLES, remember_case
from gcbulk.state.machines import MACHINES, ConflictingRepeat, check_transition
from gcbulk.state.queries import LedgerQueries
from gcbulk.state.sqlite_file import fsynced_commits
from gcbulk.state.steps import Recorded, Recording, Step

Q = TypeVar("Q")


class LedgerTransitions(LedgerEvents, LedgerQueries):
    """State changes by name. Every method returns True when it changed something, False for an idempotent repeat."""

    def record_together(self, steps: Sequence[Step[object]]) -> list[object]:
        """Transitions (``step(ledger.case_done, case_id)``, …) in one transaction (one commit, one call): all, or —
        when one raises — none. Only for steps the engine takes back to back with no request to the server between
        them: a crash then leaves the state before the first or after the last, both states it already resumes from."""
        if self._together:
            raise LedgerError("record_together does not nest")
        for each in steps:
            if each.owner is not self or each.name not in _NAMED_TRANSITIONS:
                raise ValueError(f"{each.name!r} is not a ledger transition")
        durable = any(getattr(each.method, "__func__", None) in _FSYNCED for each in steps)
        with fsynced_commits(self.db) if durable else nullcontext(), self.db.atomic():
            self._together = True  # each transition's own transaction is this one (Ledger._atomic)
            try:
                self._read_ahead(steps)
                return [each() for each in steps]
            finally:
                self._together = False
                self._rows_ahead = None
                self._lists_ahead = {}

    def record_then_read(
        self, steps: Sequence[Step[object]], query: Step[Q]
    ) -> tuple[list[object], Q | None, Exception | None]:
        """The steps — one transition, or several in one transaction as ``record_together`` — then ``query``, a read
        of what they wrote, in one call. On PostgreSQL the steps' COMMIT travels with the read's first statement
        (``PgDatabase.commit_rides_next``): one round trip fewer, and the read still sees the steps committed.

        Returns ``(results, answer, None)``; when the read failed after the steps were committed, ``(results, None,
        the failure)``, so that the caller still reports the steps it recorded. A failure before the commit (the
        steps are not recorded) is raised."""
        (outcome,) = self._record_then_read_all([Recording(tuple(steps), query)])
        return list(outcome.results), outcome.answer, outcome.failed  # type: ignore[return-value]  # query's answer

    def record_batch(self, recordings: Sequence[Recording[object]]) -> list[Recorded]:
        """Several callers' recordings — those that waited while the ledger's thread was busy — in one transaction:
        group commit. One COMMIT instead of one each, and on PostgreSQL the rows every step reads first come in one
        round trip (``_read_ahead``) and the COMMIT rides with the first read; on a shared ledger round trips are what
        a worker waits on (docs/architecture.md, "Group commit").

        Each caller gets what it would have got alone. When a step is refused or the shared transaction fails,
        nothing of it was kept, and each recording is then made again alone — so one caller's refusal never drops
        another's steps, and the refused one gets its own error. A crash leaves the ledger before all of them or after
        all of them; no caller has acted on its steps before they are committed, so both are states a run resumes
        from. Failures come back in each ``Recorded``, never raised."""
        if len(recordings) > 1 and all(self._named_transitions(r.steps) for r in recordings):
            try:
                return self._record_then_read_all(recordings)
            except Exception:  # noqa: BLE001 - nothing was kept: each recording is made alone, with its own outcome
                pass
        outcomes = []
        for recording in recordings:
            try:
                outcomes.extend(self._record_then_read_all([recording]))
            except Exception as failed:  # noqa: BLE001 - handed to its caller, who raises it
                outcomes.append(Recorded(failed=failed, recorded=False))
        return outcomes

    def _named_transitions(self, steps: Sequence[Step[object]]) -> bool:
        return all(each.owner is self and each.name in _NAMED_TRANSITIONS for each in steps)

    def _record_then_read_all(self, recordings: Sequence[Recording[object]]) -> list[Recorded]:
        """Every recording's steps in one transaction (a lone step in its own), then each one's query. On PostgreSQL
        the COMMIT travels with the first query's statements (``PgDatabase.commit_rides_next``). A failure before the
        commit (nothing recorded) is raised; a query that fails after it is that recording's ``failed``, its steps
        still recorded."""
        steps = [each for recording in recordings for each in recording.steps]
        store = self._commits_with_next_read
        queried = any(each.query is not None for each in recordings)
        rides = store.commit_rides_next() if store is not None and queried else nullcontext()
        outcomes, start = [], 0
        with rides:
            flat = self.record_together(steps) if len(steps) > 1 else [steps[0]()]
            for recording in recordings:
                results, start = tuple(flat[start : start + len(recording.steps)]), start + len(recording.steps)
                try:
                    answer = None if recording.query is None else recording.query()
                except Exception as failed:  # noqa: BLE001 - its caller raises it once it has reported its steps
                    if store is not None and store.commit_lost:
                        raise
                    outcomes.append(Recorded(results, None, failed))
                else:
                    outcomes.append(Recorded(results, answer))
        return outcomes

    def _read_ahead(self, steps: Sequence[Step[object]]) -> None:
        """The rows the steps read first, read at once (one round trip on PostgreSQL, ``rows_together``) instead of
        one by one between the steps' writes; a row a step writes is kept as written for the next step (``_apply``),
        so two steps on one row read it once. ``_get`` hands each row out once: a write that is not a transition
        (``item_session_recorded``'s) makes the next step read the row again."""
        if len(steps) < 2:
            return
        wanted: list[tuple[str, tuple[Any, ...]]] = []
        for each in steps:
            kind = _READS_FIRST.get(getattr(each.method, "__func__", None))
            if kind is not None and each.args and (kind, each.args[:1]) not in wanted:
                wanted.append((kind, each.args[:1]))
        queries = []
        for kind, values in wanted:
            table, columns, _ = self._key(kind, values[0])
            queries.append((f"SELECT * FROM {table} WHERE {columns[0]} = ?", values))
        # Two steps read more than their row: upload_completed its sent parts, item_attached its files' uploads.
        # Read ahead too, unless a step before might change them (a step that records parts or changes uploads).
        methods = {getattr(each.method, "__func__", None) for each in steps}
        lists: list[tuple[tuple[str, int], str]] = []
        for each in steps:
            method, key = getattr(each.method, "__func__", None), each.args[0] if each.args else None
            if not isinstance(key, int):
                continue
            if method is _COMPLETES_UPLOAD and not methods & _RECORDS_PARTS:
                lists.append((("sent_parts", key), _SENT_PARTS))
            elif method is _ATTACHES_ITEM and not methods & _CHANGES_UPLOADS:
                lists.append((("attached_uploads", key), _ATTACHED_UPLOADS))
        answers = self.rows_together([*queries, *((sql, (key[1],)) for key, sql in lists)])
        self._rows_ahead = {key: rows[0] for key, rows in zip(wanted, answers, strict=False) if rows}
        self._lists_ahead = {key: rows for (key, _), rows in zip(lists, answers[len(wanted) :], strict=True)}

    # ------------------------------------------------------------------------------------------------------ cases
    def case_started(self, case_id: int) -> bool:
        return self.transition("case", case_id, "running")

    def case_done(self, case_id: int) -> bool:
        return self.transition("case", case_id, "done", last_error=None)

    def case_failed(self, case_id: int, reason: str) -> bool:
        return self.transition("case", case_id, "failed", last_error=reason)

    def requeue_failed_cases(self, case_ids: Iterable[int] | None = None) -> list[int]:
        """``retry-failed``: failed cases (all, or those given) go back to planned with fresh attempt budgets."""
        if case_ids is None:
            ids = [row["id"] for row in self.rows("SELECT id FROM cases WHERE state = 'failed' ORDER BY id")]
        else:
            ids = [case_id for case_id in case_ids if self._get("case", case_id)["state"] == "failed"]
        return [case_id for case_id in ids if self.requeue_case(case_id)]

    def requeue_case(self, case_id: int) -> bool:
        """Back to planned, with its failed items (fresh attempt budgets); its display set takes values again."""
        with self.db.atomic():
            if not self.transition("case", case_id, "planned", attempts=0, last_error=None):
                return False
            for item in self.rows("SELECT id FROM items WHERE case_id = ? AND state = 'failed'", (case_id,)):
                self.transition("item", item["id"], "planned", attempts=0, last_error=None, upload_session_pk=None)
            self.reopen_display_set(case_id)
        return True

    def reopen_display_set(self, case_id: int) -> bool:
        """A display set that ended (done or failed) takes values again: back to created, or pending without pk."""
        ds = self._get("display_set", case_id)
        if ds["state"] not in ("done", "failed"):
            return False
        target = "created" if ds["pk"] else "pending"
        return self.transition("display_set", case_id, target, attempts=0, last_error=None)

    def case_id_by_title(self, title: str) -> int | None:
        return self._int_or_none("SELECT id FROM cases WHERE title = ?", (title,))

    # ------------------------------------------------------------------------------------------------ display sets
    def display_set_creating(self, case_id: int) -> bool:
        return self.transition("display_set", case_id, "creating")

    def display_set_created(self, case_id: int, pk: str) -> bool:
        return self.transition("display_set", case_id, "created", pk=pk, last_error=None)

    def display_set_not_created(self, case_id: int, reason: str) -> bool:
        """The POST certainly did not create it (e.g. a 400): back to pending."""
        return self.transition("display_set", case_id, "pending", last_error=reason)

    def display_set_values_attached(self, case_id: int) -> bool:
        return self.transition("display_set", case_id, "values_attached")

    def display_set_importing(self, case_id: int) -> bool:
        return self.transition("display_set", case_id, "importing")

    def display_set_done(self, case_id: int) -> bool:
        return self.transition("display_set", case_id, "done", last_error=None)

    def display_set_failed(self, case_id: int, reason: str) -> bool:
        return self.transition("display_set", case_id, "failed", last_error=reason)

    # ------------------------------------------------------------------------------------------------------ items
    def item_uploading(self, item_id: int) -> bool:
        return self.transition("item", item_id, "uploading")

    def item_uploaded(self, item_id: int) -> bool:
        return self.transition("item", item_id, "uploaded")

    def item_session_recorded(self, item_id: int, session_pk: str | None) -> bool:
        """The upload session that imports this item's uploads (docs/gc-api.md §2, §10), recorded before the values PATCH
        names it; None forgets it (its uploads were replaced). Not a state change: the item stays where it is."""
        with self._fsynced(), self._atomic():
            item = self._get("item", item_id)
            if item.get("upload_session_pk") == session_pk:
                return False
            self.db.execute(
                "UPDATE items SET upload_session_pk = ?, updated_at = ? WHERE id = ?",
                (session_pk, self.now(), item_id),
            )
            self.record_event(
                "item.upload_session",
                subject="item",
                subject_id=item_id,
                case_id=item["case_id"],
                from_state=item["state"],
                to_state=item["state"],
                data={"upload_session_pk": session_pk},
            )
        return True

    def item_upload_session(self, item_id: int) -> str | None:
        """The pk of the upload session recorded for this item, if any."""
        return self._get("item", item_id).get("upload_session_pk")

    def item_attached(self, item_id: int) -> bool:
        """The values PATCH took this item: its completed uploads are now Grand Challenge's (consumed)."""
        with self._atomic():
            item = self._get("item", item_id)
            if item["state"] == "attached":
                return False
            # Per present file, its newest completed or consumed upload, in one read; the rows read are the rows
            # changed (no second read of each inside the transition).
            uploads = []
            ahead = self._lists_ahead.pop(("attached_uploads", item_id), None)
            for row in ahead if ahead is not None else self.rows(_ATTACHED_UPLOADS, (item_id,)):
                if row["id"] is None:
                    raise LedgerError(
                        f"item {item_id} ({item['socket_slug']}) cannot be attached: file {row['attached_file_path']} "
                        "has no completed upload"
                    )
                uploads.append(row)
            self._apply("item", item_id, item, "attached", {})
            for upload in uploads:
                self._apply("upload", upload["id"], upload, "consumed", {})
        return True

    def item_done(self, item_id: int) -> bool:
        return self.transition("item", item_id, "done", last_error=None)

    def item_failed(self, item_id: int, reason: str) -> bool:
        return self.transition("item", item_id, "failed", last_error=reason)

    def item_requeued(self, item_id: int) -> bool:
        # A new attempt gets a new session: the old one ran (or failed) with uploads that are gone.
        return self.transition("item", item_id, "planned", upload_session_pk=None)

    # ---------------------------------------------------------------------------------------------------- uploads
    def upload_creating(self, file_id: int, *, part_size: int) -> int:
        """Record the intent to ``POST uploads/`` for a file, before sending it; return the upload's ledger id.

        A repeat while that intent is unconfirmed returns the same id. Raises ``LiveUploadExists`` when the file
        already has an initialized or completed upload (resume that one, or end it first).
        """
        if part_size <= 0:
            raise ValueError(f"part size must be positive, got {part_size}")
        with self._fsynced(), self._atomic():
            now = self.now()
            # The upload's row goes in first, made from the file's row and only if the file has no live upload, so
            # that on PostgreSQL it travels with the read below: one round trip for both. Its part count is the
            # one computed below (ceil(size / part_size), at least 1).
            inserted = self.db.execute(
                "INSERT INTO uploads (file_id, state, filename, file_size, part_size, part_count, intent_at, "
                "attempts, updated_at) SELECT id, 'creating', name, size, ?, "
                "CASE WHEN size > 0 THEN (size + ? - 1) / ? ELSE 1 END, ?, 0, ? FROM files WHERE id = ? "
                "AND NOT EXISTS (SELECT 1 FROM uploads WHERE file_id = ? "
                "AND state IN ('creating', 'initialized', 'completed'))",
                (part_size, part_size, part_size, now, now, file_id, file_id),
            )
            # The file's case comes with it: its events name the case (and a file never changes case). With its
            # live upload (the newest): the one that kept the insert out, if it was kept out.
            file = self.row(
                "SELECT files.*, items.case_id AS file_case_id, live.id AS live_id, live.state AS live_state, "
                "live.part_size AS live_part_size FROM files JOIN items ON items.id = files.item_id "
                "LEFT JOIN uploads live ON live.id = (SELECT max(id) FROM uploads WHERE file_id = files.id "
                "AND state IN ('creating', 'initialized', 'completed')) WHERE files.id = ?",
                (file_id,),
            )
            if file is None:
                raise UnknownRow(f"the ledger has no file {file_id!r}")
            remember_case(self._case_of_file, file_id, file["file_case_id"])
            if not inserted.rowcount:
                if file["live_state"] == "creating":
                    if file["live_part_size"] != part_size:
                        raise ConflictingRepeat(
                            "upload", file["live_id"], "creating", "part_size", file["live_part_size"], part_size
                        )
                    repeated: int = file["live_id"]
                    return repeated
                raise LiveUploadExists(
                    f"file {file['path']} already has upload {file['live_id']} in state {file['live_state']!r}; "
                    "resume it, or mark it expired, aborted or abandoned before creating another"
                )
            upload_id = inserted.lastrowid
            assert upload_id is not None  # an INSERT's new row
            part_count = max(1, -(-file["size"] // part_size))
            self.record_event(
                "upload.creating",
                subject="upload",
                subject_id=upload_id,
                case_id=self._case_id_of("upload", {"file_id": file_id}),
                to_state="creating",
                data={"file_id": file_id, "part_size": part_size, "part_count": part_count},
            )
        return upload_id

    def upload_initialized(self, upload_id: int, *, pk: str, s3_upload_id: str, created_at: str | None = None) -> bool:
        """``POST uploads/`` answered: record ``pk`` and ``s3_upload_id`` before the first part is sent."""
        with self._fsynced():
            return self.transition(
                "upload",
                upload_id,
                "initialized",
                pk=pk,
                s3_upload_id=s3_upload_id,
                created_at=created_at or self.now(),
            )

    def upload_completed(self, upload_id: int) -> bool:
        """``complete-multipart-upload`` answered. Every part must be recorded as sent."""
        with self._atomic():
            ahead = None if self._rows_ahead is None else self._rows_ahead.pop(("upload", (upload_id,)), None)
            parts_ahead = self._lists_ahead.pop(("sent_parts", upload_id), None)
            if ahead is not None:
                upload = ahead
                parts = parts_ahead if parts_ahead is not None else self.rows(_SENT_PARTS, (upload_id,))
            else:  # the upload and its parts in one round trip on PostgreSQL
                uploads, parts = self.rows_together(
                    [("SELECT * FROM uploads WHERE id = ?", (upload_id,)), (_SENT_PARTS, (upload_id,))]
                )
                if not uploads:
                    raise UnknownRow(f"the ledger has no upload {upload_id!r}")
                upload = uploads[0]
            if upload["state"] == "completed":
                return False
            sent = {p["number"] for p in parts}
            missing = [n for n in range(1, upload["part_count"] + 1) if n not in sent]
            if missing and upload["state"] == "initialized":
                raise LedgerError(
                    f"upload {upload_id} cannot be completed: parts {missing[:10]} of {upload['part_count']} have "
                    "no ETag recorded"
                )
            self._apply("upload", upload_id, upload, "completed", {"completed_at": self.now(), "last_error": None})
            if all(p["md5"] for p in parts):
                self.db.execute(
                    "UPDATE files SET checksum = ?, checksum_part_size = ?, updated_at = ? WHERE id = ?",
                    (
                        composite_checksum([p["md5"] for p in parts]),
                        upload["part_size"],
                        self.now(),
                        upload["file_id"],
                    ),
                )
        return True

    def upload_consumed(self, upload_id: int) -> bool:
        return self.transition("upload", upload_id, "consumed")

    def upload_expired(self, upload_id: int, reason: str) -> bool:
        """Gone from the server (the 24 h sweep answers 404) or too old to finish: a new upload is needed."""
        return self.transition("upload", upload_id, "expired", last_error=reason)

    def upload_aborted(self, upload_id: int, reason: str) -> bool:
        return self.transition("upload", upload_id, "aborted", last_error=reason)

    def upload_abandoned(self, upload_id: int, reason: str) -> bool:
        return self.transition("upload", upload_id, "abandoned", last_error=reason)

    # ------------------------------------------------------------------------------------------------------ parts
    def part_sent(self, upload_id: int, number: int, *, size: int, etag: str, md5: str | None = None) -> bool:
        """Record a part's ETag as it lands (S3 returns it quoted; store it verbatim)."""
        with self._atomic():
            now = self.now()
            # A part sent for the first time is the common case: its row is inserted first — only into an
            # initialized upload, and rolled back with the transaction if a check below fails — so that on
            # PostgreSQL it travels with the upload's read, one round trip for both. The row is looked for only
            # when the insert found one there (sent again after list-parts invalidated it, or a repeat).
            inserted = self.db.execute(
                "INSERT INTO parts (upload_id, number, state, size, etag, md5, sent_at, updated_at) "
                "SELECT ?, ?, 'sent', ?, ?, ?, ?, ? WHERE EXISTS "
                "(SELECT 1 FROM uploads WHERE id = ? AND state = 'initialized') "
                "ON CONFLICT (upload_id, number) DO NOTHING",
                (upload_id, number, size, etag, md5, now, now, upload_id),
            )
            upload = self._get("upload", upload_id)
            if upload["state"] != "initialized":
                raise UploadNotOpen(
                    f"part {number} of upload {upload_id} cannot be recorded: the upload is {upload['state']!r}, and "
                    "parts are recorded only while it is 'initialized'"
                )
            if not 1 <= number <= upload["part_count"]:
                raise ValueError(f"upload {upload_id} has parts 1 to {upload['part_count']}, not {number}")
            last_size = upload["file_size"] - upload["part_size"] * (upload["part_count"] - 1)
            expected = last_size if number == upload["part_count"] else upload["part_size"]
            if size != expected:
                raise ValueError(f"part {number} of upload {upload_id} should be {expected} bytes, not {size}")
            if not inserted.rowcount:
                existing = self.row("SELECT * FROM parts WHERE upload_id = ? AND number = ?", (upload_id, number))
                assert existing is not None  # the INSERT above was refused: the row is there
                return self._apply(
                    "part",
                    (upload_id, number),
                    existing,
                    "sent",
                    {"size": size, "etag": etag, "md5": md5, "sent_at": now},
                )
            self.record_event(
                "part.sent",
                subject="part",
                subject_id=(upload_id, number),
                case_id=self._case_id_of("upload", upload),
                to_state="sent",
                data={"size": size, "etag": etag},
            )
        return True

    def part_invalidated(self, upload_id: int, number: int, reason: str) -> bool:
        """list-parts disagrees with the recorded part (missing, other size or ETag): it must be sent again."""
        with self._atomic():
            changed = self.transition("part", (upload_id, number), "invalid")
            if changed:
                self.record_event(
                    "part.invalid.reason", subject="part", subject_id=(upload_id, number), data={"reason": reason}
                )
        return changed

    # ------------------------------------------------------------------------------------------- transitions core
    def _key(self, kind: str, key: object) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
        if kind not in TABLES:
            raise ValueError(f"unknown ledger object kind {kind!r}; expected one of {', '.join(TABLES)}")
        table, columns = TABLES[kind]
        values = tuple(key) if isinstance(key, tuple) else (key,)
        if len(values) != len(columns):
            raise ValueError(f"a {kind} is identified by {', '.join(columns)}; got {key!r}")
        return table, columns, values

    def _get(self, kind: str, key: object) -> dict[str, Any]:
        table, columns, values = self._key(kind, key)
        if self._rows_ahead is not None and (ahead := self._rows_ahead.pop((kind, values), None)) is not None:
            return ahead
        where = " AND ".join(f"{c} = ?" for c in columns)
        row = self.row(f"SELECT * FROM {table} WHERE {where}", values)
        if row is None:
            raise UnknownRow(f"the ledger has no {kind} {key!r}")
        return row

    def transition(self, kind: str, key: object, target: str, **fields: Any) -> bool:
        """Move one object to ``target`` (and set ``fields``) in one transaction with its event.

        Returns False for an idempotent repeat (already in ``target``; nothing written). Raises ``UnknownRow``,
        ``IllegalTransition`` or ``ConflictingRepeat``.
        """
        with self._atomic():
            return self._apply(kind, key, self._get(kind, key), target, fields)

    def _apply(self, kind: str, key: object, row: dict[str, Any], target: str, fields: dict[str, Any]) -> bool:
        """``transition`` of a row its caller has just read in the transaction it holds open (no second read of the
        same row, no savepoint): the same check, the same write, the same event."""
        table, columns, values = self._key(kind, key)
        if not check_transition(MACHINES[kind], key, row["state"], target, row, fields):
            return False
        fields = {name: redact(value) if name == "last_error" else value for name, value in fields.items()}
        updates = {"state": target, "updated_at": self.now(), **fields}
        if kind == "item" and target in ("planned", "failed", "withdrawn"):
            # Its upload session served one try: a retry, or new uploads, get a session of their own (m004).
            updates["upload_session_pk"] = None
        assignments = ", ".join(f"{name} = ?" for name in updates)
        where = " AND ".join(f"{c} = ?" for c in columns)
        self.db.execute(f"UPDATE {table} SET {assignments} WHERE {where}", (*updates.values(), *values))
        if self._rows_ahead is not None:  # the row as now written, for the next step of record_together
            self._rows_ahead[(kind, values)] = {**row, **updates}
        self.record_event(
            f"{kind}.{target}",
            subject=kind,
            subject_id=key,
            case_id=self._case_id_of(kind, row),
            from_state=row["state"],
            to_state=target,
            data=fields,
        )
        return True

    def _fsynced(self) -> AbstractContextManager[Any]:
        """The next commit is fsynced (``state/sqlite_file.py`` ``configure`` says which records need it and why);
        inside ``record_together`` that one decides (``_FSYNCED``)."""
        return nullcontext() if self._together else fsynced_commits(self.db)

    def _atomic(self) -> AbstractContextManager[Any]:
        """A transaction of its own; inside ``record_together`` a part of that one (which rolls back whole)."""
        return nullcontext() if self._together else self.db.atomic()

    def record_attempt(self, kind: str, key: object, error: str | None = None) -> int:
        """Count one more attempt at a case, display set, item or upload; return the new count."""
        if kind not in ("case", "display_set", "item", "upload"):
            raise ValueError(f"attempts are counted for cases, display sets, items and uploads, not {kind!r}")
        table, columns, values = self._key(kind, key)
        where = " AND ".join(f"{c} = ?" for c in columns)
        with self._atomic():
            row = self._get(kind, key)
            attempts: int = row["attempts"] + 1
            self.db.execute(
                f"UPDATE {table} SET attempts = ?, last_error = ?, updated_at = ? WHERE {where}",
                (attempts, redact(error), self.now(), *values),
            )
            self.record_event(
                f"{kind}.attempt",
                subject=kind,
                subject_id=key,
                case_id=self._case_id_of(kind, row),
                data={"attempts": attempts, "error": error},
            )
        return attempts


# What ``record_together`` takes: the named transitions of this class, not its generic core nor itself.
_NAMED_TRANSITIONS = frozenset(
    name
    for name, member in vars(LedgerTransitions).items()
    if callable(member)
    and not name.startswith("_")
    and name not in ("record_together", "record_then_read", "record_batch", "transition", "record_attempt")
)


# The row each named transition reads first, by kind; its key is the step's first argument (``_read_ahead``).
_READS_FIRST: dict[object, str] = {
    **{f: "case" for f in (LedgerTransitions.case_started, LedgerTransitions.case_done, LedgerTransitions.case_failed)},
    **{
        f: "display_set"
        for f in (
            LedgerTransitions.display_set_creating,
            LedgerTransitions.display_set_created,
            LedgerTransitions.display_set_not_created,
            LedgerTransitions.display_set_values_attached,
            LedgerTransitions.display_set_importing,
            LedgerTransitions.display_set_done,
            LedgerTransitions.display_set_failed,
        )
    },
    **{
        f: "item"
        for f in (
            LedgerTransitions.item_uploading,
            LedgerTransitions.item_uploaded,
            LedgerTransitions.item_session_recorded,
            LedgerTransitions.item_attached,
            LedgerTransitions.item_done,
            LedgerTransitions.item_failed,
            LedgerTransitions.item_requeued,
        )
    },
    **{
        f: "upload"
        for f in (
            LedgerTransitions.upload_initialized,
            LedgerTransitions.upload_completed,
            LedgerTransitions.upload_consumed,
            LedgerTransitions.upload_expired,
            LedgerTransitions.upload_aborted,
            LedgerTransitions.upload_abandoned,
            LedgerTransitions.part_sent,
        )
    },
}

_SENT_PARTS = "SELECT number, md5 FROM parts WHERE upload_id = ? AND state = 'sent' ORDER BY number"
_COMPLETES_UPLOAD = LedgerTransitions.upload_completed
_RECORDS_PARTS = frozenset({LedgerTransitions.part_sent, LedgerTransitions.part_invalidated})
# Per present file of an item, its newest completed or consumed upload: what item_attached consumes.
_ATTACHED_UPLOADS = (
    "SELECT files.id AS attached_file_id, files.path AS attached_file_path, uploads.* FROM files "
    "LEFT JOIN uploads ON uploads.id = (SELECT max(newest.id) FROM uploads AS newest "
    "WHERE newest.file_id = files.id AND newest.state IN ('completed', 'consumed')) "
    "WHERE files.item_id = ? AND files.present = 1 ORDER BY files.id"
)
_ATTACHES_ITEM = LedgerTransitions.item_attached
_CHANGES_UPLOADS = frozenset(
    method for method, kind in _READS_FIRST.items() if kind == "upload" and method is not LedgerTransitions.part_sent
) | {LedgerTransitions.upload_creating, LedgerTransitions.item_requeued}

# Records of what the server creates that only the ledger names (an upload, an upload session) and the intent before
# an upload's create: lost on power loss, they would leave an orphan on the server (state/sqlite_file.py configure).
_FSYNCED = frozenset(
    {LedgerTransitions.upload_creating, LedgerTransitions.upload_initialized, LedgerTransitions.item_session_recorded}
)

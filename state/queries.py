"""The ledger's read side: snapshots of cases, uploads and parts for the transfer engine, and counts for status.

A layer of the ledger over ``LedgerCore`` (see ``gcbulk.state.ledger_core``). Reads go through ``Ledger.rows`` (a plain cursor) and build the frozen records
of ``gcbulk.state.records``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gcbulk.state.errors import UnknownRow
from gcbulk.state.ledger_core import LedgerCore, remember_case
from gcbulk.state.machines import LIVE_UPLOAD_STATES, RUNNABLE_CASE_STATES
from gcbulk.state.records import (
    AttentionRow,
    CaseWork,
    DisplaySetRow,
    FileWork,
    ImportInFlight,
    ItemWork,
    PartRow,
    UploadRow,
)

# Uploads with their sent parts, one row per part (an upload without any: one row, its part columns NULL).
_UPLOADS_WITH_PARTS = (
    "SELECT uploads.*, parts.number AS sent_part_number, parts.size AS sent_part_size, "
    "parts.etag AS sent_part_etag, parts.md5 AS sent_part_md5 FROM uploads "
    "LEFT JOIN parts ON parts.upload_id = uploads.id AND parts.state = 'sent' "
    "WHERE {where} ORDER BY uploads.id, parts.number"
)
_STATE_TABLES = {"case": "cases", "display_set": "display_sets", "item": "items", "upload": "uploads", "part": "parts"}


class LedgerQueries(LedgerCore):
    """Queries by name: what is in flight, what to do next, how far the job is."""

    # ---------------------------------------------------------------------------------------------------- queries
    def _upload_record(self, row: dict[str, Any], parts: dict[int, PartRow] | None = None) -> UploadRow:
        if parts is None:
            parts = self._sent_parts([row["id"]]).get(row["id"], {})
        return UploadRow(
            id=row["id"],
            file_id=row["file_id"],
            state=row["state"],
            filename=row["filename"],
            pk=row["pk"],
            s3_upload_id=row["s3_upload_id"],
            file_size=row["file_size"],
            part_size=row["part_size"],
            part_count=row["part_count"],
            intent_at=row["intent_at"],
            created_at=row["created_at"],
            completed_at=row["completed_at"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            parts=parts,
        )

    def _sent_parts(self, upload_ids: Sequence[int]) -> dict[int, dict[int, PartRow]]:
        result: dict[int, dict[int, PartRow]] = {upload_id: {} for upload_id in upload_ids}
        for start in range(0, len(upload_ids), 500):
            chunk = upload_ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for p in self.rows(
                f"SELECT * FROM parts WHERE state = 'sent' AND upload_id IN ({marks}) ORDER BY upload_id, number",
                chunk,
            ):
                result[p["upload_id"]][p["number"]] = PartRow(
                    upload_id=p["upload_id"],
                    number=p["number"],
                    state=p["state"],
                    size=p["size"],
                    etag=p["etag"],
                    md5=p["md5"],
                )
        return result

    def _uploads_with_parts(self, where: str, params: Sequence[Any]) -> list[UploadRow]:
        """Uploads (``where`` on ``uploads``, in id order) with their sent parts, in one statement."""
        return self._upload_records(self.rows(_UPLOADS_WITH_PARTS.format(where=where), params))

    def _upload_records(self, rows: Iterable[dict[str, Any]]) -> list[UploadRow]:
        """The uploads of ``_UPLOADS_WITH_PARTS`` rows (one row per sent part), each with its parts."""
        records: dict[int, tuple[dict[str, Any], dict[int, PartRow]]] = {}
        for row in rows:
            upload, parts = records.setdefault(row["id"], (row, {}))
            number = row["sent_part_number"]
            if number is not None:
                parts[number] = PartRow(
                    upload_id=row["id"],
                    number=number,
                    state="sent",
                    size=row["sent_part_size"],
                    etag=row["sent_part_etag"],
                    md5=row["sent_part_md5"],
                )
        return [self._upload_record(upload, parts) for upload, parts in records.values()]

    def upload(self, upload_id: int) -> UploadRow:
        found = self._uploads_with_parts("uploads.id = ?", (upload_id,))
        if not found:
            raise UnknownRow(f"the ledger has no upload {upload_id!r}")
        return found[0]

    def uploads_of_file(self, file_id: int) -> list[UploadRow]:
        return self._uploads_with_parts("uploads.file_id = ?", (file_id,))

    def in_flight_uploads(self) -> list[UploadRow]:
        """Uploads that exist (or may exist) on Grand Challenge and are not consumed yet."""
        rows = self.rows("SELECT * FROM uploads WHERE state IN ('creating', 'initialized', 'completed') ORDER BY id")
        parts = self._sent_parts([r["id"] for r in rows])
        return [self._upload_record(r, parts[r["id"]]) for r in rows]

    def live_upload_count(self) -> int:
        """Uploads counting against the server's 2000-upload cap (docs/gc-api.md §1)."""
        marks = ", ".join("?" * len(LIVE_UPLOAD_STATES))
        return self.count(f"SELECT count(*) FROM uploads WHERE state IN ({marks})", sorted(LIVE_UPLOAD_STATES))

    def attached_image_items_count(self) -> int:
        """Image values handed to Grand Challenge and not finished: imports in flight (docs/gc-api.md §2: at most 16)."""
        return self.count(
            "SELECT count(*) FROM items WHERE state = 'attached' AND value IS NULL "
            "AND (super_kind IS NULL OR super_kind = 'Image')"
        )

    def _case_id_of(self, kind: str, row: dict[str, Any]) -> int | None:
        if kind == "case":
            case_id: int = row["id"]
            return case_id
        if kind in ("display_set", "item"):
            owner: int = row["case_id"]
            return owner
        if kind == "upload":
            return self._remembered(
                self._case_of_file,
                row["file_id"],
                "SELECT items.case_id FROM files JOIN items ON items.id = files.item_id WHERE files.id = ?",
            )
        if kind == "part":
            return self._remembered(
                self._case_of_upload,
                row["upload_id"],
                "SELECT items.case_id FROM uploads JOIN files ON files.id = uploads.file_id "
                "JOIN items ON items.id = files.item_id WHERE uploads.id = ?",
            )
        return None

    def _remembered(self, known: dict[int, int], key: int, sql: str) -> int | None:
        if key in known:
            return known[key]
        found = self.scalar(sql, (key,))
        if found is None:
            return None
        case_id = int(found)
        remember_case(known, key, case_id)
        return case_id

    def case_work(self, case_id: int) -> CaseWork:
        # Three reads, none waiting on another's answer (one round trip on PostgreSQL, ``rows_together``): the case
        # with its display set (one each), its items with their present files, and the live uploads of those files
        # with their sent parts. The engine reads a case several times per case.
        cases, item_rows, upload_rows = self.rows_together(
            [
                (
                    "SELECT cases.*, display_sets.case_id AS ds_case_id, display_sets.state AS ds_state, "
                    "display_sets.pk AS ds_pk, display_sets.attempts AS ds_attempts, display_sets.last_error AS "
                    "ds_last_error, display_sets.create_order AS ds_create_order FROM cases "
                    "LEFT JOIN display_sets ON display_sets.case_id = cases.id WHERE cases.id = ?",
                    (case_id,),
                ),
                (
                    "SELECT items.*, files.id AS file_id, files.path AS file_path, files.name AS file_name, "
                    "files.size AS file_size, files.mtime_ns AS file_mtime_ns, files.checksum AS file_checksum, "
                    "files.checksum_part_size AS file_checksum_part_size FROM items "
                    "LEFT JOIN files ON files.item_id = items.id AND files.present = 1 "
                    "WHERE items.case_id = ? AND items.state != 'withdrawn' ORDER BY items.id, files.position",
                    (case_id,),
                ),
                (
                    _UPLOADS_WITH_PARTS.format(
                        where="uploads.state IN ('creating', 'initialized', 'completed') AND uploads.file_id IN "
                        "(SELECT files.id FROM files JOIN items ON items.id = files.item_id WHERE items.case_id = ? "
                        "AND files.present = 1 AND items.state != 'withdrawn')"
                    ),
                    (case_id,),
                ),
            ]
        )
        if not cases:
            raise UnknownRow(f"the ledger has no case {case_id!r}")
        case = cases[0]
        if case["ds_case_id"] is None:
            raise UnknownRow(f"the ledger has no display_set {case_id!r}")
        items: dict[int, dict[str, Any]] = {}
        files: list[dict[str, Any]] = []
        for row in item_rows:
            items.setdefault(row["id"], row)
            if row["file_id"] is not None:
                files.append(row)
        uploads: dict[int, UploadRow] = {}
        for upload in self._upload_records(upload_rows):
            uploads[upload.file_id] = upload  # in id order: the newest wins
        root = Path(self.case_root)
        files_by_item: dict[int, list[FileWork]] = {}
        for f in files:
            files_by_item.setdefault(f["id"], []).append(
                FileWork(
                    id=f["file_id"],
                    item_id=f["id"],
                    relative_path=f["file_path"],
                    path=root / f["file_path"],
                    name=f["file_name"],
                    size=f["file_size"],
                    mtime_ns=f["file_mtime_ns"],
                    checksum=f["file_checksum"],
                    upload=uploads.get(f["file_id"]),
                    checksum_part_size=f["file_checksum_part_size"],
                )
            )
        return CaseWork(
            id=case["id"],
            title=case["title"],
            folder=case["folder"],
            state=case["state"],
            attempts=case["attempts"],
            last_error=case["last_error"],
            display_set=DisplaySetRow(
                case_id=case["ds_case_id"],
                state=case["ds_state"],
                pk=case["ds_pk"],
                attempts=case["ds_attempts"],
                last_error=case["ds_last_error"],
                create_order=case["ds_create_order"],
            ),
            items=tuple(
                ItemWork(
                    id=i["id"],
                    case_id=i["case_id"],
                    socket_slug=i["socket_slug"],
                    super_kind=i["super_kind"],
                    value_json=i["value"],
                    state=i["state"],
                    attempts=i["attempts"],
                    last_error=i["last_error"],
                    files=tuple(files_by_item.get(i["id"], ())),
                    upload_session_pk=i.get("upload_session_pk"),
                )
                for i in items.values()
            ),
        )

    def cases_to_run(self, *, page: int = 200) -> Iterator[CaseWork]:
        """Planned and running cases, oldest first, one at a time (paged, so memory stays flat)."""
        marks = ", ".join("?" * len(RUNNABLE_CASE_STATES))
        last_id = 0
        while True:
            ids = [
                row["id"]
                for row in self.rows(
                    f"SELECT id FROM cases WHERE id > ? AND state IN ({marks}) ORDER BY id LIMIT ?",
                    (last_id, *sorted(RUNNABLE_CASE_STATES), page),
                )
            ]
            if not ids:
                return
            for case_id in ids:
                yield self.case_work(case_id)
            last_id = ids[-1]

    def counts_by_state(self) -> dict[str, dict[str, int]]:
        """``{"case": {"planned": 3, …}, "display_set": …, "item": …, "upload": …, "part": …}``."""
        counts: dict[str, dict[str, int]] = {}
        for kind, table in _STATE_TABLES.items():
            rows = self.rows(f"SELECT state, count(*) AS n FROM {table} GROUP BY state ORDER BY state")
            counts[kind] = {row["state"]: row["n"] for row in rows}
        return counts

    def blocked_case_count(self) -> int:
        return self.count("SELECT count(*) FROM cases WHERE state = 'blocked'")

    def cases_needing_attention(self, *, limit: int | None = None) -> list[AttentionRow]:
        """Failed, blocked and vanished cases, with their last error and findings."""
        sql = (
            "SELECT * FROM cases WHERE state IN ('failed', 'blocked', 'vanished') "
            "ORDER BY CASE state WHEN 'failed' THEN 0 WHEN 'blocked' THEN 1 ELSE 2 END, id"
        )
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return [
            AttentionRow(
                case_id=row["id"],
                title=row["title"],
                folder=row["folder"],
                state=row["state"],
                last_error=row["last_error"],
                findings=json.loads(row["findings"]) if row["findings"] else [],
            )
            for row in self.rows(sql, params)
        ]

    def imports_in_flight(self) -> list[ImportInFlight]:
        """Values whose import the run waits for (items ``attached``), oldest first, with their files' bytes."""
        rows = self.rows(
            "SELECT items.case_id AS case_id, cases.title AS title, items.socket_slug AS socket_slug, "
            "items.updated_at AS attached_at, coalesce(sum(files.size), 0) AS bytes FROM items "
            "JOIN cases ON cases.id = items.case_id LEFT JOIN files ON files.item_id = items.id AND files.present = 1 "
            "WHERE items.state = 'attached' "
            "GROUP BY items.id, items.case_id, cases.title, items.socket_slug, items.updated_at "
            "ORDER BY items.updated_at, items.id"
        )
        return [ImportInFlight(**{**row, "bytes": int(row["bytes"])}) for row in rows]  # PostgreSQL sums are numeric

    def item_upload_pks(self, item_id: int) -> list[str]:
        """The Grand Challenge pks of an item's uploads, in file order: per present file, its newest completed or
        consumed upload (what the values PATCH names, and what the server's upload session lists)."""
        return self.items_upload_pks([item_id]).get(item_id, [])

    def items_upload_pks(self, item_ids: Sequence[int]) -> dict[int, list[str]]:
        """``item_upload_pks`` of several items in one statement: item id → its pks (an item without any: absent)."""
        if not item_ids:
            return {}
        marks = ", ".join("?" * len(item_ids))
        rows = self.rows(
            "SELECT files.item_id AS item_id, files.id AS file_id, uploads.pk AS pk FROM files "
            "JOIN uploads ON uploads.file_id = files.id "
            f"WHERE files.item_id IN ({marks}) AND files.present = 1 AND uploads.state IN ('completed', 'consumed') "
            "ORDER BY files.item_id, files.position, uploads.id",
            tuple(item_ids),
        )
        newest: dict[int, dict[int, str]] = {}
        for row in rows:
            newest.setdefault(row["item_id"], {})[row["file_id"]] = row["pk"]
        return {item_id: list(pks.values()) for item_id, pks in newest.items()}

    def transfer_totals(self) -> dict[str, int]:
        """What the runnable (planned or running) cases still hold: cases, files and bytes not yet handed to Grand
        Challenge, and the bytes of those files already sent as recorded parts (for an honest ETA on resume)."""
        marks = ", ".join("?" * len(RUNNABLE_CASE_STATES))
        states = sorted(RUNNABLE_CASE_STATES)
        cases = self.scalar(f"SELECT count(*) FROM cases WHERE state IN ({marks})", states)
        files = self.row(
            "SELECT count(*) AS files, coalesce(sum(files.size), 0) AS bytes FROM files "
            "JOIN items ON items.id = files.item_id JOIN cases ON cases.id = items.case_id "
            f"WHERE cases.state IN ({marks}) AND files.present = 1 "
            "AND items.state IN ('planned', 'uploading', 'uploaded')",
            states,
        )
        sent = self.scalar(
            "SELECT coalesce(sum(parts.size), 0) FROM parts JOIN uploads ON uploads.id = parts.upload_id "
            "JOIN files ON files.id = uploads.file_id JOIN items ON items.id = files.item_id "
            "JOIN cases ON cases.id = items.case_id "
            f"WHERE cases.state IN ({marks}) AND parts.state = 'sent' "
            "AND uploads.state IN ('initialized', 'completed') AND items.state IN ('planned', 'uploading', 'uploaded')",
            states,
        )
        assert files is not None  # an aggregate without GROUP BY is one row
        return {"cases": cases, "files": files["files"], "bytes": files["bytes"], "bytes_sent": sent}

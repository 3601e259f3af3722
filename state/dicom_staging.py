"""The ledger's record of de-identified DICOM staged for upload (table ``dicom_staging``, migration m005): per source
file, its staged copy's path, size and SHA-256, and the source's size and mtime when it was staged.

Plain functions over an open ``Ledger`` (run on the ledger's thread by ``LedgerRunner.run``), kept apart from the
ledger class so the job ledger's own tables stay where they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gcbulk.state.ledger_core import LedgerCore


@dataclass(frozen=True, kw_only=True)
class StagedRow:
    file_id: int
    item_id: int
    source_size: int
    source_mtime_ns: int
    staged_path: str
    size: int
    sha256: str
    staged_at: str


def staged_of_item(ledger: LedgerCore, item_id: int) -> dict[int, StagedRow]:
    """file id → its staged copy, for one item."""
    rows = ledger.rows("SELECT * FROM dicom_staging WHERE item_id = ? ORDER BY file_id", (item_id,))
    return {row["file_id"]: StagedRow(**row) for row in rows}


def record_staged(
    ledger: Any, item_id: int, rows: Iterable[dict[str, Any]], *, case_id: int | None = None, reused: bool = False
) -> None:
    """Replaces the item's staged files by ``rows`` (one transaction, one event: ``dicom.staged``, or
    ``dicom.staging_adopted`` for a whole staging found on disk that the ledger had not recorded yet)."""
    rows = list(rows)
    now = ledger.now()
    with ledger.db.atomic():
        ledger.db.execute("DELETE FROM dicom_staging WHERE item_id = ?", (item_id,))
        for row in rows:
            ledger.db.execute(
                "INSERT INTO dicom_staging (file_id, item_id, source_size, source_mtime_ns, staged_path, size, sha256, "
                "staged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row["file_id"],
                    item_id,
                    row["source_size"],
                    row["source_mtime_ns"],
                    row["staged_path"],
                    row["size"],
                    row["sha256"],
                    now,
                ),
            )
        ledger.record_event(
            "dicom.staging_adopted" if reused else "dicom.staged",
            subject="item",
            subject_id=item_id,
            case_id=case_id,
            data={"files": len(rows), "bytes": sum(row["size"] for row in rows)},
        )


def staged_items_on_the_server(ledger: LedgerCore) -> list[int]:
    """Items Grand Challenge holds (attached or done) that still have staged copies: their release was cut off."""
    rows = ledger.rows(
        "SELECT DISTINCT dicom_staging.item_id AS item_id FROM dicom_staging JOIN items ON items.id = "
        "dicom_staging.item_id WHERE items.state IN ('attached', 'done') ORDER BY dicom_staging.item_id"
    )
    return [row["item_id"] for row in rows]


def forget_staged(ledger: LedgerCore, item_id: int) -> None:
    """The staged copies were released (uploaded) or are stale: the item has none."""
    with ledger.db.atomic():
        ledger.db.execute("DELETE FROM dicom_staging WHERE item_id = ?", (item_id,))


def staging_events(ledger: LedgerCore, item_id: int | None = None) -> int:
    """How many times staged sets were recorded (for an item): de-identified, or found whole on disk after a crash
    between their last file and the record. A set that was de-identified again would be recorded twice."""
    kinds = "kind IN ('dicom.staged', 'dicom.staging_adopted')"
    if item_id is None:
        return ledger.count(f"SELECT count(*) FROM events WHERE {kinds}")
    return ledger.count(f"SELECT count(*) FROM events WHERE {kinds} AND subject_id = ?", (str(item_id),))


def fit_upload(ledger: LedgerCore, upload_id: int, size: int) -> None:
    """An upload sends a staged copy, whose size is not the planned source's: its row (still 'creating', before any
    part) is made to describe the bytes actually sent, so its parts are cut from them."""
    with ledger.db.atomic():
        ledger.db.execute(
            "UPDATE uploads SET file_size = ?, part_count = max(1, (? + part_size - 1) / part_size) "
            "WHERE id = ? AND state = 'creating'",
            (size, size, upload_id),
        )

"""The export's mask downloads in its ledger: one row per mask file, moved through the ``mask`` machine
(``pending → downloading → verified | failed``). The base of ``gcbulk.state.results_ledger.ResultsLedger``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gcbulk.state.ledger_extension import LedgerExtension


@dataclass(frozen=True, kw_only=True)
class MaskRow:
    path: str
    answer_pk: str
    image_pk: str
    file_pk: str | None
    file_url: str
    state: str
    size: int | None
    sha256: str | None
    etag: str | None
    mtime_ns: int | None
    attempts: int
    last_error: str | None


class MaskRecords(LedgerExtension):
    """Mask rows of an export ledger, on ``LedgerExtension``'s transaction and event helpers."""

    @staticmethod
    def _mask(row: dict[str, Any]) -> MaskRow:
        return MaskRow(**{k: row[k] for k in MaskRow.__dataclass_fields__})

    def mask(self, path: str) -> MaskRow | None:
        row = self.row("SELECT * FROM export_masks WHERE path = ?", (path,))
        return None if row is None else self._mask(row)

    def masks_of_answer(self, answer_pk: str) -> list[MaskRow]:
        return [
            self._mask(r)
            for r in self.rows("SELECT * FROM export_masks WHERE answer_pk = ? ORDER BY path", (answer_pk,))
        ]

    def plan_mask(self, *, path: str, answer_pk: str, image_pk: str, file_pk: str | None, file_url: str) -> MaskRow:
        """Records that ``path`` must hold this file of this answer's image. A path that held another image (the
        answer was modified) goes back to ``pending``; the same image keeps its state (verified stays verified)."""
        existing = self.mask(path)
        source = {"answer_pk": answer_pk, "image_pk": image_pk, "file_pk": file_pk, "file_url": file_url}
        if existing is None:
            with self.db.atomic():
                self.db.execute(
                    "INSERT INTO export_masks (path, answer_pk, image_pk, file_pk, file_url, state, attempts, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?)",
                    (path, answer_pk, image_pk, file_pk, file_url, self.now()),
                )
                self.ledger.record_event(
                    "mask.pending",
                    subject="mask",
                    subject_id=path,
                    to_state="pending",
                    data={"answer_pk": answer_pk, "image_pk": image_pk},
                )
        elif (existing.answer_pk, existing.image_pk, existing.file_pk) != (answer_pk, image_pk, file_pk):
            self._transition(
                "mask",
                "export_masks",
                "path",
                path,
                "pending",
                **source,
                size=None,
                sha256=None,
                etag=None,
                mtime_ns=None,
                last_error=None,
            )
        elif existing.file_url != file_url:
            with self.db.atomic():
                self.db.execute("UPDATE export_masks SET file_url = ? WHERE path = ?", (file_url, path))
        found = self.mask(path)
        assert found is not None
        return found

    def forget_masks(self, answer_pk: str, keep: Iterable[str]) -> int:
        """Forgets the answer's mask rows at paths it no longer uses (its case was renamed, its image has fewer
        files). The files stay on disk."""
        kept = list(keep)
        with self.db.atomic():
            placeholders = ",".join("?" * len(kept)) or "''"
            return self.db.execute(
                f"DELETE FROM export_masks WHERE answer_pk = ? AND path NOT IN ({placeholders})", (answer_pk, *kept)
            ).rowcount

    def mask_downloading(self, path: str) -> bool:
        return self._transition("mask", "export_masks", "path", path, "downloading")

    def mask_object(self, path: str, *, etag: str | None, size: int | None) -> None:
        """What the object store says the file is (not a state change): a resumed download compares the ETag."""
        with self.db.atomic():
            self.db.execute(
                "UPDATE export_masks SET etag = ?, size = ?, updated_at = ? WHERE path = ?",
                (etag, size, self.now(), path),
            )

    def mask_verified(self, path: str, *, size: int, sha256: str, mtime_ns: int) -> bool:
        return self._transition(
            "mask",
            "export_masks",
            "path",
            path,
            "verified",
            size=size,
            sha256=sha256,
            mtime_ns=mtime_ns,
            last_error=None,
        )

    def mask_touched(self, path: str, *, mtime_ns: int) -> None:
        """A verified file was re-hashed and found intact after its mtime changed (e.g. copied with the folder)."""
        with self.db.atomic():
            self.db.execute("UPDATE export_masks SET mtime_ns = ? WHERE path = ?", (mtime_ns, path))

    def mask_failed(self, path: str, reason: str) -> bool:
        with self.db.atomic():
            self.db.execute("UPDATE export_masks SET attempts = attempts + 1 WHERE path = ?", (path,))
            return self._transition("mask", "export_masks", "path", path, "failed", last_error=reason)

    def mask_requeued(self, path: str, reason: str) -> bool:
        """A verified file is missing or changed on disk: download it again."""
        return self._transition(
            "mask", "export_masks", "path", path, "pending", sha256=None, mtime_ns=None, last_error=reason
        )

    def mask_counts(self) -> dict[str, int]:
        return self._counts("export_masks")

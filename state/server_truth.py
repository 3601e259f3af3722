"""What the ledger needs to let the server be the truth (issue 10): the job's own display sets as the ledger knows
them (for ``gcbulk verify``), the re-queue of a case whose display set or values the server lost, the explicit
``order`` of each display set, and the uploads whose create answer was lost (possible orphans on the server).

A layer of the ledger over its transitions (``gcbulk.state.ledger_core``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from gcbulk.state.transitions import LedgerTransitions

# Items whose value went to a display set: a lost display set takes them all back to planned.
_VALUE_EXPECTED = ("attached", "done")


@dataclass(frozen=True, kw_only=True)
class RecordedCase:
    """A case whose display set this job made (or adopted), as the ledger knows it: what verify checks."""

    case_id: int
    title: str
    state: str
    display_set_pk: str
    display_set_state: str
    # socket slug -> item id, for the items whose value the server holds once imported ('done'); an 'attached' one
    # may still be importing, so its absence proves nothing
    expected_values: Mapping[str, int]


@dataclass(frozen=True, kw_only=True)
class UnconfirmedCreate:
    """A ``POST uploads/`` whose answer was never recorded: the server may hold an empty upload of ours."""

    upload_id: int
    state: str
    filename: str
    intent_at: str
    case_id: int


class LedgerServerTruth(LedgerTransitions):
    """What the server says against what the ledger recorded: ``gcbulk verify`` and the lost-create sweep."""

    # ---------------------------------------------------------------------------------------------------- verify
    def recorded_cases(self, *, page: int = 500) -> Iterator[RecordedCase]:
        """Every case with a display-set pk, oldest first, paged (memory stays flat for a million cases)."""
        last_id = 0
        while True:
            rows = self.rows(
                "SELECT cases.id AS id, cases.title AS title, cases.state AS state, display_sets.pk AS pk, "
                "display_sets.state AS ds_state FROM cases JOIN display_sets ON display_sets.case_id = cases.id "
                "WHERE cases.id > ? AND display_sets.pk IS NOT NULL ORDER BY cases.id LIMIT ?",
                (last_id, page),
            )
            if not rows:
                return
            marks = ", ".join("?" * len(rows))
            expected: dict[int, dict[str, int]] = {row["id"]: {} for row in rows}
            for item in self.rows(
                f"SELECT id, case_id, socket_slug FROM items WHERE case_id IN ({marks}) AND state = 'done'",
                [row["id"] for row in rows],
            ):
                expected[item["case_id"]][item["socket_slug"]] = item["id"]
            for row in rows:
                yield RecordedCase(
                    case_id=row["id"],
                    title=row["title"],
                    state=row["state"],
                    display_set_pk=row["pk"],
                    display_set_state=row["ds_state"],
                    expected_values=expected[row["id"]],
                )
            last_id = rows[-1]["id"]

    def case_lost_on_server(
        self, case_id: int, *, display_set_gone: bool, item_ids: Iterable[int] = (), reason: str
    ) -> bool:
        """The server no longer has what the ledger says it made: the display set (``display_set_gone``: its pk is
        forgotten and a new one is created) or some values (``item_ids``). Those items go back to planned (their
        uploads were consumed: new ones are sent) and a done case runs again. One transaction."""
        with self.db.atomic():
            case = self._get("case", case_id)
            ds = self._get("display_set", case_id)
            items = self.rows("SELECT id, state FROM items WHERE case_id = ?", (case_id,))
            wanted = {row["id"] for row in items} if display_set_gone else set(item_ids)
            lost = [row["id"] for row in items if row["id"] in wanted and row["state"] in _VALUE_EXPECTED]
            if not display_set_gone and not lost:
                return False
            if display_set_gone and ds["pk"] is not None:
                self.transition("display_set", case_id, "pending", pk=None, attempts=0, last_error=reason)
            elif ds["state"] in ("done", "failed"):  # it takes values again (in flight: it already does)
                self.transition("display_set", case_id, "created", attempts=0, last_error=None)
            for item_id in lost:
                self.transition("item", item_id, "planned", attempts=0, last_error=reason)
            if case["state"] == "done":
                self.transition("case", case_id, "planned", attempts=0, last_error=reason)
            self.record_event(
                "case.lost_on_server",
                subject="case",
                subject_id=case_id,
                case_id=case_id,
                data={"reason": reason, "display_set_gone": display_set_gone, "items": lost},
            )
        return True

    # ----------------------------------------------------------------------------------------------------- order
    def display_sets_without_order(self) -> list[tuple[int, str]]:
        """(case id, title) of the display sets not yet created that have no ``create_order``."""
        rows = self.rows(
            "SELECT cases.id AS id, cases.title AS title FROM cases JOIN display_sets ON display_sets.case_id = cases.id "
            "WHERE display_sets.pk IS NULL AND display_sets.create_order IS NULL ORDER BY cases.id"
        )
        return [(row["id"], row["title"]) for row in rows]

    def highest_create_order(self) -> int:
        return self.scalar("SELECT coalesce(max(create_order), 0) FROM display_sets") or 0

    def display_set_orders_assigned(self, orders: Mapping[int, int]) -> int:
        """Fix each display set's ``order`` (case id → order) before its create; one that has one keeps it."""
        changed = 0
        with self.db.atomic():
            for case_id, order in orders.items():
                cursor = self.db.execute(
                    "UPDATE display_sets SET create_order = ?, updated_at = ? WHERE case_id = ? "
                    "AND create_order IS NULL",
                    (order, self.now(), case_id),
                )
                changed += cursor.rowcount
            if changed:
                self.record_event(
                    "display_set.orders_assigned",
                    data={"count": changed, "lowest": min(orders.values()), "highest": max(orders.values())},
                )
        return changed

    # --------------------------------------------------------------------------------------------------- orphans
    def unconfirmed_upload_creates(
        self, *, since: str, only_cases: Collection[int] | None = None
    ) -> list[UnconfirmedCreate]:
        """Uploads whose create was sent (or about to be) but whose answer was never recorded, since ``since`` (an ISO
        time: older ones the server's 24 h sweep has taken), not yet looked for on the server; ``only_cases``: those
        of these cases alone. Each names its case: one another live worker holds may have its create on the wire
        right now (``engine/upload/orphans.py`` leaves those alone)."""
        rows = self.rows(
            "SELECT uploads.id AS upload_id, uploads.state AS state, uploads.filename AS filename, uploads.intent_at AS "
            "intent_at, items.case_id AS case_id FROM uploads JOIN files ON files.id = uploads.file_id "
            "JOIN items ON items.id = files.item_id WHERE uploads.pk IS NULL AND uploads.state IN ('creating', "
            "'abandoned') AND uploads.orphan_checked_at IS NULL AND uploads.intent_at >= ? ORDER BY uploads.id",
            (since,),
        )
        return [
            UnconfirmedCreate(**row)  # the columns are named as its fields
            for row in rows
            if only_cases is None or row["case_id"] in only_cases
        ]

    def upload_pk_known(self, pk: str) -> bool:
        return self.count("SELECT count(*) FROM uploads WHERE pk = ?", (pk,)) > 0

    def known_upload_pks(self) -> set[str]:
        return {row["pk"] for row in self.rows("SELECT pk FROM uploads WHERE pk IS NOT NULL")}

    def orphan_upload_resolved(self, upload_id: int, *, pk: str | None, s3_upload_id: str | None, reason: str) -> None:
        """The lost create was looked for on the server: found (``pk``: now aborted there) or not. A row still in
        ``creating`` ends: ``aborted`` with the orphan's pk, or ``abandoned`` (the create never arrived)."""
        with self.db.atomic():
            upload = self._get("upload", upload_id)
            if upload["state"] == "creating":
                if pk is not None:
                    self.transition("upload", upload_id, "initialized", pk=pk, s3_upload_id=s3_upload_id or "")
                    self.transition("upload", upload_id, "aborted", last_error=reason)
                else:
                    self.transition("upload", upload_id, "abandoned", last_error=reason)
            self.db.execute(
                "UPDATE uploads SET orphan_checked_at = ?, updated_at = ? WHERE id = ?",
                (self.now(), self.now(), upload_id),
            )
            self.record_event(
                "upload.orphan_checked",
                subject="upload",
                subject_id=upload_id,
                case_id=self._case_id_of("upload", upload),
                data={"orphan_pk": pk, "reason": reason},
            )

"""What the ledger needs to let the server be the truth (issue 10): the job's own display sets as the ledger knows
them (for ``gcbulk verify``), the re-queue of a case whose display set or values the server lost, the explicit
``order`` of each display set, and the uploads whose create answer was lost (possible orphans on the server).

A layer of the ledger over its transitions (``gcbulk.state.ledger_core``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from gcbulk.state.transitions import LedgerTransitions

# Items whose value went to a display set: a lost display set takes them all back to planned.
_VALUE_EXPECTED = ("attached", "done")


# The study's display sets as the last listing of this connection saw them (``start_study_listing``): a temporary
# table, the connection's alone (another worker on a shared PostgreSQL ledger lists for itself), so a process that
# lists a study of a million display sets at every follow-mode round holds one page of it, not all of it (issue 31).
# ``sockets``: the slugs of the sockets that hold a value, space-separated (a slug has no space).
_LISTING = "study_listing"
_CREATE_LISTING = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_LISTING} (pk TEXT PRIMARY KEY, title TEXT, display_order INTEGER NOT NULL, "
    "sockets TEXT NOT NULL)"
)


@dataclass(frozen=True, slots=True)  # a page of a listing holds a thousand: no __dict__ each
class ListedDisplaySet:
    """A display set (or archive item) as a listing of the study showed it."""

    pk: str
    title: str | None
    order: int
    sockets: frozenset[str]  # the sockets that hold a value


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
    # the sockets holding a value in the study's last listing, or None: the listing did not show the display set
    listed_sockets: frozenset[str] | None


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
        """Every case with a display-set pk, oldest first, paged (memory stays flat for a million cases), each with
        what the study's last listing on this connection showed of its display set."""
        self._ensure_study_listing()
        last_id = 0
        while True:
            rows = self.rows(
                "SELECT cases.id AS id, cases.title AS title, cases.state AS state, display_sets.pk AS pk, "
                f"display_sets.state AS ds_state, {_LISTING}.sockets AS listed_sockets FROM cases "
                f"JOIN display_sets ON display_sets.case_id = cases.id LEFT JOIN {_LISTING} ON {_LISTING}.pk = "
                "display_sets.pk WHERE cases.id > ? AND display_sets.pk IS NOT NULL ORDER BY cases.id LIMIT ?",
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
                    listed_sockets=None if row["listed_sockets"] is None else _sockets(row["listed_sockets"]),
                )
            last_id = rows[-1]["id"]

    # ------------------------------------------------------------------------------------------- study listing
    def start_study_listing(self) -> None:
        """Forgets the study's last listing on this connection: a new one follows, page by page."""
        with self.db.atomic():
            self.db.execute(_CREATE_LISTING)
            self.db.execute(f"DELETE FROM {_LISTING}")

    def _ensure_study_listing(self) -> None:
        """The listing's table, empty if this connection has listed nothing yet (then nothing is 'listed')."""
        with self.db.atomic():
            self.db.execute(_CREATE_LISTING)

    def add_to_study_listing(self, page: Sequence[ListedDisplaySet]) -> None:
        """Keeps a page of the listing; a display set listed twice (paging while others add display sets) keeps
        what its last row showed."""
        if not page:
            return
        with self.db.atomic():
            self.db.conn.executemany(
                f"INSERT INTO {_LISTING} (pk, title, display_order, sockets) VALUES (?, ?, ?, ?) ON CONFLICT (pk) DO "
                "UPDATE SET title = excluded.title, display_order = excluded.display_order, sockets = excluded.sockets",
                [(found.pk, found.title, found.order, " ".join(sorted(found.sockets))) for found in page],
            )

    def foreign_display_set_titles(self) -> dict[str, str]:
        """Title → pk of the listed display sets this job did not make, adopt or set out to make: a case with one of
        these titles would take over someone else's display set (docs/gc-api.md §10)."""
        self._ensure_study_listing()
        rows = self.rows(
            f"SELECT title, pk FROM {_LISTING} WHERE title IS NOT NULL AND title NOT IN (SELECT cases.title FROM "
            "cases JOIN display_sets ON display_sets.case_id = cases.id WHERE display_sets.state != 'pending' OR "
            "display_sets.pk IS NOT NULL) ORDER BY display_order, pk"
        )
        return {row["title"]: row["pk"] for row in rows}

    def listed_display_sets_of_cases_without_one(self) -> dict[str, str]:
        """Title → pk of the listed display sets whose title is that of a case of this job with no display set
        recorded: one created just before a crash (its answer lost) is found again here."""
        self._ensure_study_listing()
        rows = self.rows(
            f"SELECT {_LISTING}.title AS title, {_LISTING}.pk AS pk FROM {_LISTING} JOIN cases ON cases.title = "
            f"{_LISTING}.title JOIN display_sets ON display_sets.case_id = cases.id WHERE display_sets.pk IS NULL "
            f"OR display_sets.state = 'pending' ORDER BY {_LISTING}.display_order, {_LISTING}.pk"
        )
        return {row["title"]: row["pk"] for row in rows}

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


def _sockets(listed: str) -> frozenset[str]:
    return frozenset(listed.split())

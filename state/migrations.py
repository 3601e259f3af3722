"""The ledger's schema, as forward migrations (sqlite-utils ``Migrations``, recorded in ``_sqlite_migrations``).

Add a change as a new ``m00N_…`` function at the bottom; never edit one that has shipped, because ledgers in the field
already record it as applied. A ledger that records a migration this code does not know was written by a newer
gcbulk, and is refused rather than guessed at.

Tables are plain (TEXT/INTEGER, JSON in TEXT columns) so ``sqlite-utils tables/rows/query`` can read a ledger.

The same migrations build a PostgreSQL ledger (``gcbulk.state.pg_store`` gives PostgreSQL the table builder used
here): write a new migration once, with ``db.table(...).create/create_index/add_column`` and SQL both dialects read, and
branch on ``dialect(db)`` only for what cannot be shared (m002's trigger).
"""

from __future__ import annotations

import functools

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from gcbulk.state.dsn import dialect

MIGRATION_SET = "gcbulk-ledger"
migrations = Migrations(MIGRATION_SET)


class LedgerTooNew(Exception):
    """The ledger records migrations that this version of gcbulk does not have."""


@migrations()
def m001_initial(db: Database) -> None:
    db.table("job").create(
        {
            "id": int,
            "reader_study": str,
            "base_url": str,
            "case_root": str,
            "job_file": str,
            "rules": str,  # JSON: the job's rules at the last plan, for the record
            "state": str,
            "plan_started_at": str,
            "plan_finished_at": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"reader_study", "base_url", "case_root", "state"},
    )
    db.table("cases").create(
        {
            "id": int,
            "title": str,  # the idempotency key: unique per reader study (docs/gc-api.md §3)
            "folder": str,
            "state": str,
            "attempts": int,
            "last_error": str,
            "findings": str,  # JSON list of the case's findings at the last plan
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"title", "folder", "state", "attempts"},
        defaults={"attempts": 0},
    )
    db.table("cases").create_index(["title"], unique=True)
    db.table("cases").create_index(["state"])
    db.table("display_sets").create(
        {
            "case_id": int,
            "state": str,
            "pk": str,
            "attempts": int,
            "last_error": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="case_id",
        not_null={"state", "attempts"},
        defaults={"attempts": 0},
        foreign_keys=[("case_id", "cases", "id")],
    )
    db.table("items").create(
        {
            "id": int,
            "case_id": int,
            "socket_slug": str,
            "super_kind": str,  # Image / File / Value from the socket catalogue; NULL when planned offline
            "value": str,  # JSON of a value socket's value; NULL for sockets fed by files
            "state": str,
            "attempts": int,
            "last_error": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"case_id", "socket_slug", "state", "attempts"},
        defaults={"attempts": 0},
        foreign_keys=[("case_id", "cases", "id")],
    )
    db.table("items").create_index(["case_id", "socket_slug"], unique=True)
    db.table("items").create_index(["state"])
    db.table("files").create(
        {
            "id": int,
            "item_id": int,
            "position": int,
            "path": str,  # relative to the job's case root, '/'-separated
            "name": str,  # the upload's filename (docs/gc-api.md §1: a bare name of at most 128 characters)
            "size": int,
            "mtime_ns": int,
            "checksum": str,  # S3-style multipart MD5 of the uploaded bytes ("<md5 of part md5s>-<parts>")
            "checksum_part_size": int,
            "present": int,  # 0 once a re-plan no longer finds this file in its item
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"item_id", "position", "path", "name", "size", "mtime_ns", "present"},
        defaults={"present": 1},
        foreign_keys=[("item_id", "items", "id")],
    )
    db.table("files").create_index(["item_id", "path"], unique=True)
    db.table("uploads").create(
        {
            "id": int,
            "file_id": int,
            "state": str,
            "filename": str,
            "pk": str,
            "s3_upload_id": str,
            "file_size": int,
            "part_size": int,
            "part_count": int,
            "intent_at": str,  # when 'creating' was written, before POST uploads/
            "created_at": str,  # the server's 'created': the 24 h sweep counts from it (docs/gc-api.md §1)
            "completed_at": str,
            "attempts": int,
            "last_error": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"file_id", "state", "filename", "file_size", "part_size", "part_count", "attempts"},
        defaults={"attempts": 0},
        foreign_keys=[("file_id", "files", "id")],
    )
    db.table("uploads").create_index(["file_id"])
    db.table("uploads").create_index(["state"])
    db.table("parts").create(
        {
            "upload_id": int,
            "number": int,
            "state": str,
            "size": int,
            "etag": str,  # verbatim, with its quotes (docs/gc-api.md §1: send it back as S3 returned it)
            "md5": str,
            "sent_at": str,
            "updated_at": str,
        },
        pk=("upload_id", "number"),
        not_null={"state", "size", "etag"},
        foreign_keys=[("upload_id", "uploads", "id")],
    )
    db.table("events").create(
        {
            "id": int,
            "at": str,
            "kind": str,
            "subject": str,
            "subject_id": str,
            "case_id": int,
            "from_state": str,
            "to_state": str,
            "data": str,
        },
        pk="id",
        not_null={"at", "kind"},
    )
    db.table("events").create_index(["case_id"])


@migrations()
def m002_append_only_events(db: Database) -> None:
    # The event log is the audit trail of a migration: refuse edits at the database level, so neither a bug nor a
    # hand-run sqlite-utils command can rewrite history.
    if dialect(db) == "postgresql":
        db.execute(
            "CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the event log is append-only'; END $$"
        )
        for action in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER events_no_{action.lower()} BEFORE {action} ON events "
                "FOR EACH ROW EXECUTE FUNCTION events_append_only()"
            )
        return
    for action in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER events_no_{action.lower()} BEFORE {action} ON events "
            "BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END"
        )


def known_names() -> list[str]:
    """All migration names this code has, in order (what an empty database would have pending)."""
    return list(_known_names())


@functools.cache  # the same for the life of the process: asked at every open of a ledger
def _known_names() -> tuple[str, ...]:
    empty = Database(memory=True, execute_plugins=False)
    try:
        return tuple(migration.name for migration in migrations.pending(empty))
    finally:
        empty.close()  # Python 3.13 warns of a connection left to the collector (ResourceWarning)


def migrate(db: Database) -> list[str]:
    """Apply pending migrations in order (each in its own transaction); return the names applied.

    Raises :class:`LedgerTooNew` when the ledger records a migration this code does not know.
    """
    applied = [migration.name for migration in migrations.applied(db)]
    unknown = sorted(set(applied) - set(known_names()))
    if unknown:
        raise LedgerTooNew(
            f"this ledger was written by a newer gcbulk (it has schema migrations {', '.join(unknown)}); "
            "upgrade gcbulk to open it"
        )
    pending = [migration.name for migration in migrations.pending(db)]
    migrations.apply(db)
    return pending


@migrations()
def m003_results_export_and_reorder(db: Database) -> None:
    """The results side (issue 6; appended by the results helper): an export's local copy of the study's questions,
    display sets and answers, its mask downloads and runs; a reorder's items. Every ledger gets these tables (they
    stay empty in an upload job's ledger), as one schema keeps every ledger readable by every command."""
    db.table("export_runs").create(
        {
            "id": int,
            "state": str,
            "scope": str,  # "all" (answers/) or "mine" (answers/mine/)
            "started_at": str,
            "finished_at": str,
            "counts": str,  # JSON: answers new / modified / unchanged / removed, masks downloaded / failed …
            "updated_at": str,
        },
        pk="id",
        not_null={"state", "scope", "started_at"},
    )
    db.table("export_questions").create(
        {"pk": str, "position": int, "data": str, "seen_run": int},  # data: the question's JSON as the API sent it
        pk="pk",
        not_null={"position", "data", "seen_run"},
    )
    db.table("export_display_sets").create(
        {
            "pk": str,
            "position": int,  # in the server's order (order, created), docs/gc-api.md §3
            "title": str,
            "sort_order": int,
            "socket_values": str,  # JSON {socket slug: image pk | file URL | value}
            "seen_run": int,
        },
        pk="pk",
        not_null={"position", "seen_run"},
    )
    db.table("export_display_sets").create_index(["position"])
    db.table("export_answers").create(
        {
            "pk": str,
            "modified": str,  # the server's: an answer whose 'modified' is unchanged is not fetched again
            "created": str,
            "creator": str,
            "question_pk": str,
            "display_set_pk": str,
            "is_ground_truth": int,
            "answer": str,  # JSON
            "answer_image_pk": str,
            "last_edit_duration": str,
            "total_edit_duration": str,
            "seen_run": int,
            "changed_run": int,
        },
        pk="pk",
        not_null={"modified", "creator", "question_pk", "is_ground_truth", "seen_run", "changed_run"},
    )
    # The order in which the per-case table is written (case, reader, ground truth), and the runs' bookkeeping.
    db.table("export_answers").create_index(["display_set_pk", "creator", "is_ground_truth"])
    db.table("export_answers").create_index(["seen_run"])
    db.table("export_answers").create_index(["answer_image_pk"])
    db.table("export_masks").create(
        {
            "path": str,  # relative to the export folder, '/'-separated, every component sanitised
            "answer_pk": str,
            "image_pk": str,
            "file_pk": str,
            "file_url": str,  # on the API host; resolved to a fresh signed URL for each download (docs/gc-api.md §4)
            "state": str,
            "size": int,
            "sha256": str,
            "etag": str,  # the object store's, to tell whether a partial download is of the same object
            "mtime_ns": int,  # of the verified file, so an intact file is not hashed again on every run
            "attempts": int,
            "last_error": str,
            "updated_at": str,
        },
        pk="path",
        not_null={"answer_pk", "image_pk", "file_url", "state", "attempts"},
        defaults={"attempts": 0},
    )
    db.table("export_masks").create_index(["answer_pk"])
    db.table("export_masks").create_index(["state"])
    db.table("reorder_items").create(
        {
            "display_set_pk": str,
            "title": str,
            "target_order": int,
            "previous_order": int,  # as listed when planned: what an undo would restore
            "state": str,
            "attempts": int,
            "last_error": str,
            "updated_at": str,
        },
        pk="display_set_pk",
        not_null={"target_order", "state", "attempts"},
        defaults={"attempts": 0},
    )
    db.table("reorder_items").create_index(["state"])


@migrations()
def m004_item_upload_sessions(db: Database) -> None:
    """Each image value is imported by its own upload session, created by gcbulk and recorded here before the values
    PATCH names it (docs/gc-api.md §2, §10): a run, or a resumed one, polls that session by pk; the server's session list
    (no filters, never cleaned up) is not scanned."""
    db.table("items").add_column("upload_session_pk", str)


@migrations()
def m006_server_reconciliation(db: Database) -> None:
    """The server is the truth (issue 10): each display set's ``create_order`` is fixed once, in plan order, before
    the first create, so concurrent creates never share an order and a resumed run keeps folder order; an upload
    whose create answer was lost is looked for on the server once (``orphan_checked_at``), then left alone."""
    db.table("display_sets").add_column("create_order", int)
    db.table("uploads").add_column("orphan_checked_at", str)


# m005 was set aside for DICOM staging while m006 shipped first; it is applied after m006 (registration order), and
# a ledger that has m006 but not m005 simply gets it on its next open.
@migrations()
def m005_dicom_staging(db: Database) -> None:
    """A DICOM Image Set's files are de-identified into a staging folder before upload (gcbulk.engine.dicom): each
    staged file's size and SHA-256 and its source's size and mtime, so a resume reuses what is staged and a changed
    source is found (accessed by ``gcbulk.state.dicom_staging``)."""
    db.table("dicom_staging").create(
        {
            "file_id": int,  # the files row of the source
            "item_id": int,
            "source_size": int,
            "source_mtime_ns": int,
            "staged_path": str,  # absolute
            "size": int,
            "sha256": str,
            "staged_at": str,
        },
        pk="file_id",
        not_null={"item_id", "source_size", "source_mtime_ns", "staged_path", "size", "sha256", "staged_at"},
    )
    db.table("dicom_staging").create_index(["item_id"])


@migrations()
def m007_worker_leases(db: Database) -> None:
    """Several workers on one job (issue 13, accessed by ``gcbulk.state.workers``): a case's lease (who works on it,
    until when, in seconds on the lease clock), the job's workers with their heartbeats, each worker's units under a
    shared server limit, and per limit the units the server counts that no live worker holds (other tools')."""
    db.table("cases").add_column("lease_owner", str)
    db.table("cases").add_column("lease_expires_at", float)
    db.table("workers").create(
        {
            "worker_id": str,
            "host": str,
            "pid": int,
            "started_at": str,
            "heartbeat_at": float,  # lease clock
            "stopped_at": str,
            "api_limit": int,
            "imports_limit": int,
            "progress": str,  # JSON: the worker's own counters at its last heartbeat
        },
        pk="worker_id",
        not_null={"started_at", "heartbeat_at"},
    )
    db.table("worker_holdings").create(
        {"worker_id": str, "limit_name": str, "held": int},
        pk=("worker_id", "limit_name"),
        not_null={"held"},
    )
    db.table("shared_limits").create({"limit_name": str, "external": int}, pk="limit_name", not_null={"external"})


@migrations()
def m008_content_checks(db: Database) -> None:
    """What the planner's content checks found in each file (issue 31, accessed by ``gcbulk.state.content_checks``),
    under the file's path and socket, with the size, mtime and inode it had then and the socket's description (a
    digest): a re-plan reads a file again only when one of those changed. Findings and grid are the planner's JSON; the ledger does not interpret them."""
    db.table("content_checks").create(
        {
            "path": str,
            "socket": str,
            "size": int,
            "mtime_ns": int,
            "inode": int,
            "definition": str,  # a digest of the socket's description when the file was checked
            "findings": str,  # JSON list of findings
            "grid": str,  # JSON, or NULL: the image grid from its header, for the case's grid check
        },
        pk=("path", "socket"),
        not_null={"size", "mtime_ns", "inode", "definition", "findings"},
    )


@migrations()
def m009_file_reads(db: Database) -> None:
    """What the planner itself read from each file (issue 31, accessed by ``gcbulk.state.content_checks``): an .mha
    header's verdict, an .mhd header, or a JSON value file's value, under the file's path and the kind of read, with
    the size, mtime and inode it had then: a re-plan reads a file again only when one of those changed. The outcome is
    the planner's text (JSON, or empty for a sound .mha); the ledger does not interpret it."""
    db.table("file_reads").create(
        {
            "path": str,
            "kind": str,  # "mha-verdict", "metaimage-header" (an .mhd) or "json-value"
            "size": int,
            "mtime_ns": int,
            "inode": int,
            "outcome": str,  # the planner's: the verdict, header or value, or why there is none
        },
        pk=("path", "kind"),
        not_null={"size", "mtime_ns", "inode", "outcome"},
    )

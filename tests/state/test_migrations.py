"""A ledger written by an older gcbulk is migrated forward on open, keeping its data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from gcbulk.state.ledger import Ledger
from gcbulk.state.migrations import known_names, migrations
from tests.state.conftest import BINDING


def _write_v1_ledger(path: Path) -> None:
    """What gcbulk with only m001 left behind: the schema of m001 and one case half-way through."""
    db = Database(path)
    migrations.apply(db, stop_before="m002_append_only_events")
    db["job"].insert(
        {
            "id": 1,
            "reader_study": BINDING.reader_study,
            "base_url": BINDING.base_url,
            "case_root": BINDING.case_root,
            "state": "complete",
        }
    )
    db["cases"].insert({"id": 1, "title": "p1", "folder": "p1", "state": "running", "attempts": 0})
    db["display_sets"].insert({"case_id": 1, "state": "created", "pk": "ds-1", "attempts": 0})
    db["items"].insert({"id": 1, "case_id": 1, "socket_slug": "ct-image", "state": "uploading", "attempts": 0})
    db["files"].insert(
        {
            "id": 1,
            "item_id": 1,
            "position": 0,
            "path": "p1/ct.mha",
            "name": "ct.mha",
            "size": 10,
            "mtime_ns": 1,
            "present": 1,
        }
    )
    db["events"].insert({"at": "2025-01-01T00:00:00.000000Z", "kind": "case.running", "case_id": 1})
    db.close()


def test_v1_ledger_is_migrated_forward_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.ledger.sqlite"
    _write_v1_ledger(path)
    with Ledger.open(path, BINDING) as ledger:
        applied = [m.name for m in migrations.applied(ledger.db)]
        assert applied == known_names()
        work = ledger.case_work(1)
        assert (work.state, work.display_set.pk, work.items[0].state) == ("running", "ds-1", "uploading")
        assert ledger.plan_state == "complete"
        # What m002 brought: the event log now refuses edits.
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            ledger.db.execute("DELETE FROM events")


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "job.ledger.sqlite"
    Ledger.open(path, BINDING).close()
    schema = _schema(path)
    Ledger.open(path, BINDING).close()
    assert _schema(path) == schema


def _schema(path: Path) -> str:
    db = Database(path)
    try:
        return db.schema
    finally:
        db.close()

"""Group commit (``Ledger.record_batch``): the recordings of several callers that waited for the ledger's thread, in
one transaction — and each caller gets exactly what it would have got alone, its own refusal included. Run on both
stores."""

from __future__ import annotations

import sqlite3

import pytest

from gcbulk.state.ledger import IllegalTransition, Ledger, LedgerError
from gcbulk.state.steps import Recording, step
from tests.state.conftest import MiB, planned_case, record, sync_of_each_commit


@pytest.fixture
def two_cases(ledger: Ledger) -> Ledger:
    """Cases 1 ('p1') and 2 ('p2'), each one CT file of 12 MiB (3 parts of 5 MiB), planned."""
    record(ledger, [planned_case(title, {"ct-image": [("ct.mha", 12 * MiB)]}) for title in ("p1", "p2")])
    return ledger


def _item(ledger: Ledger, case_id: int) -> int:
    return ledger.case_work(case_id).items[0].id


def _state_moves(ledger: Ledger, since: int) -> list[tuple[str, int]]:
    return [(e["kind"], e["case_id"]) for e in ledger.events()[since:]]


def test_callers_recorded_together_each_get_their_own_results_and_reads(two_cases: Ledger) -> None:
    ledger = two_cases
    before = len(ledger.events())
    outcomes = ledger.record_batch(
        [
            Recording((step(ledger.case_started, 1), step(ledger.item_uploading, _item(ledger, 1)))),
            Recording((step(ledger.case_started, 2),), step(ledger.case_work, 2)),
            Recording((step(ledger.case_started, 1),)),  # a repeat of the first caller's step: still a no-op
        ]
    )
    assert [(o.results, o.failed, o.recorded) for o in outcomes] == [
        ((True, True), None, True),
        ((True,), None, True),
        ((False,), None, True),
    ]
    read = outcomes[1].answer
    assert read == ledger.case_work(2) and read is not None and read.state == "running"  # read after the commit
    assert _state_moves(ledger, before) == [("case.running", 1), ("item.uploading", 1), ("case.running", 2)]


def test_one_callers_refused_step_costs_the_others_nothing(two_cases: Ledger) -> None:
    ledger = two_cases
    before = len(ledger.events())
    refused, kept, read_after = ledger.record_batch(
        [
            # The first caller's pair is all or none on its own: planned -> done is no move of the case machine.
            Recording((step(ledger.item_uploading, _item(ledger, 1)), step(ledger.case_done, 1))),
            Recording((step(ledger.case_started, 2),)),
            Recording((step(ledger.item_uploading, _item(ledger, 2)),), step(ledger.case_work, 2)),
        ]
    )
    assert not refused.recorded and isinstance(refused.failed, IllegalTransition) and refused.results == ()
    assert (kept.results, kept.failed, kept.recorded) == ((True,), None, True)
    assert read_after.recorded and read_after.answer == ledger.case_work(2)
    assert ledger.case_work(1).state == "planned" and ledger.case_work(1).items[0].state == "planned"
    assert _state_moves(ledger, before) == [("case.running", 2), ("item.uploading", 2)]


def test_a_read_that_fails_after_the_batch_is_committed_is_that_callers_alone(two_cases: Ledger) -> None:
    ledger = two_cases
    missing, fine = ledger.record_batch(
        [
            Recording((step(ledger.case_started, 1),), step(ledger.upload, 10_000)),
            Recording((step(ledger.case_started, 2),), step(ledger.case_work, 2)),
        ]
    )
    assert missing.recorded and missing.results == (True,)  # the step stays recorded: its caller reports it
    assert isinstance(missing.failed, LedgerError) and "no upload 10000" in str(missing.failed)
    assert fine.failed is None and fine.answer == ledger.case_work(2)
    assert (ledger.case_work(1).state, ledger.case_work(2).state) == ("running", "running")


def test_parts_of_one_upload_recorded_together_are_all_kept(two_cases: Ledger) -> None:
    """Parallel parts of one file finish together: their steps read the same upload row in one batch."""
    ledger = two_cases
    item_id = _item(ledger, 1)
    ledger.record_together([step(ledger.case_started, 1), step(ledger.item_uploading, item_id)])
    upload_id = ledger.upload_creating(ledger.case_work(1).items[0].files[0].id, part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    parts = ((1, 5 * MiB), (2, 5 * MiB), (3, 2 * MiB))
    outcomes = ledger.record_batch(
        [
            Recording((step(ledger.part_sent, upload_id, n, size=size, etag=f'"{n}"', md5=f"{n}" * 32),))
            for n, size in parts
        ]
        + [Recording((step(ledger.upload_completed, upload_id),), step(ledger.upload, upload_id))]
    )
    assert [o.results for o in outcomes] == [(True,), (True,), (True,), (True,)]
    completed = outcomes[-1].answer
    assert completed == ledger.upload(upload_id) and completed is not None and completed.state == "completed"
    assert sorted(completed.parts) == [1, 2, 3]


def test_a_step_that_is_no_transition_is_made_alone(two_cases: Ledger) -> None:
    ledger = two_cases
    outcomes = ledger.record_batch(
        [Recording((step(ledger.case_started, 1),)), Recording((step(ledger.record_attempt, "case", 2),))]
    )
    assert [(o.results, o.failed) for o in outcomes] == [((True,), None), ((1,), None)]


@pytest.mark.sqlite_only
def test_recordings_together_are_one_transaction(two_cases: Ledger) -> None:
    ledger = two_cases
    begun: list[str] = []
    connection = ledger.db.conn
    assert isinstance(connection, sqlite3.Connection)
    connection.set_trace_callback(lambda sql: begun.append(sql) if sql.upper().startswith("BEGIN") else None)
    try:
        ledger.record_batch([Recording((step(ledger.case_started, case_id),)) for case_id in (1, 2)])
        assert len(begun) == 1
        begun.clear()
        # A refusal inside (planned -> uploaded skips a move): the shared attempt, then each caller's own.
        done, refused = ledger.record_batch(
            [Recording((step(ledger.case_done, 1),)), Recording((step(ledger.item_uploaded, _item(ledger, 2)),))]
        )
    finally:
        connection.set_trace_callback(None)
    assert len(begun) == 1 + 2
    assert done.results == (True,) and isinstance(refused.failed, IllegalTransition)
    assert (ledger.case_work(1).state, ledger.case_work(2).items[0].state) == ("done", "planned")


@pytest.mark.sqlite_only
def test_a_batch_holding_what_only_the_ledger_names_on_the_server_is_fsynced_whole(two_cases: Ledger) -> None:
    """An upload's intent must survive power loss (else an orphan on the server): recorded beside other callers'
    steps, their shared commit is fsynced; a batch of steps the server can tell again is not."""
    ledger = two_cases
    statements: list[str] = []
    connection = ledger.db.conn
    assert isinstance(connection, sqlite3.Connection)
    connection.set_trace_callback(statements.append)
    try:
        file_id = ledger.case_work(1).items[0].files[0].id
        ledger.record_batch([Recording((step(ledger.case_started, case_id),)) for case_id in (1, 2)])
        intent, _ = ledger.record_batch(
            [
                Recording((step(ledger.upload_creating, file_id, part_size=5 * MiB),)),
                Recording((step(ledger.item_uploading, _item(ledger, 2)),)),
            ]
        )
    finally:
        connection.set_trace_callback(None)
    assert sync_of_each_commit(statements) == ["NORMAL", "FULL"]
    upload_id = intent.results[0]
    assert intent.recorded and isinstance(upload_id, int) and ledger.upload(upload_id).state == "creating"
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # back to NORMAL

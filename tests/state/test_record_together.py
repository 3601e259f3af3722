"""Transitions recorded together (``Ledger.record_together``): one transaction, all or none, each still checked by
its state machine and logged as its own event. Run on both stores."""

from __future__ import annotations

import pytest

from gcbulk.state.ledger import IllegalTransition, Ledger, LedgerError
from gcbulk.state.steps import Step, step
from tests.state.conftest import MiB


def _events(ledger: Ledger) -> list[tuple[str, str | None, str | None]]:
    return [(e["kind"], e["from_state"], e["to_state"]) for e in ledger.events() if e["subject"] in ("case", "item")]


def test_steps_recorded_together_are_each_checked_and_logged(one_case: Ledger) -> None:
    ledger = one_case
    item_id = ledger.case_work(1).items[0].id
    before = len(ledger.events())
    results = ledger.record_together(
        [step(ledger.case_started, 1), step(ledger.item_uploading, item_id), step(ledger.case_started, 1)]
    )  # the repeat is still a no-op
    assert results == [True, True, False]
    work = ledger.case_work(1)
    assert (work.state, work.items[0].state) == ("running", "uploading")
    assert [(e["kind"], e["case_id"]) for e in ledger.events()[before:]] == [("case.running", 1), ("item.uploading", 1)]


def test_a_refused_step_leaves_none_of_them_recorded(one_case: Ledger) -> None:
    ledger = one_case
    item_id = ledger.case_work(1).items[0].id
    before = _events(ledger)
    with pytest.raises(IllegalTransition):
        # planned -> done is no move of the case machine: the item's step before it is rolled back with it.
        ledger.record_together([step(ledger.item_uploading, item_id), step(ledger.case_done, 1)])
    work = ledger.case_work(1)
    assert (work.state, work.items[0].state) == ("planned", "planned")
    assert _events(ledger) == before
    assert ledger.case_started(1)  # and the ledger takes the next change in a transaction of its own
    assert ledger.case_work(1).state == "running"


def test_a_multi_row_transition_inside_is_all_or_none_too(one_case: Ledger) -> None:
    ledger = one_case
    item_id = ledger.case_work(1).items[0].id
    ledger.case_started(1)
    ledger.item_uploading(item_id)
    ledger.item_uploaded(item_id)
    with pytest.raises(LedgerError, match="no completed upload"):  # its file was never uploaded
        ledger.record_together([step(ledger.display_set_creating, 1), step(ledger.item_attached, item_id)])
    assert ledger.case_work(1).display_set.state == "pending"


def test_only_transitions_are_recorded_together(one_case: Ledger) -> None:
    ledger = one_case
    for method in (ledger.close, ledger.case_work, ledger._apply, ledger.record_together, print):
        with pytest.raises(ValueError, match="not a ledger transition"):
            ledger.record_together([Step(method, (1,))])
    assert one_case.case_work(1).state == "planned"


def test_a_resent_part_is_applied_to_the_row_already_there(one_case: Ledger) -> None:
    ledger = one_case
    file_id = ledger.case_work(1).items[0].files[0].id
    upload_id = ledger.upload_creating(file_id, part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    assert ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"a"', md5="a" * 32)
    ledger.part_invalidated(upload_id, 1, reason="list-parts does not show it")
    assert ledger.upload(upload_id).missing_part_numbers == [1, 2, 3]
    assert ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"b"', md5="b" * 32)  # invalid -> sent, new ETag
    assert ledger.upload(upload_id).parts[1].etag == '"b"'
    assert not ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"b"', md5="b" * 32)  # a repeat


def _initialized_upload(ledger: Ledger) -> tuple[int, int]:
    """(item id, upload id) of p1's one file, its upload created on the server (pk recorded), no part sent."""
    work = ledger.case_work(1)
    item_id, file_id = work.items[0].id, work.items[0].files[0].id
    ledger.record_together([step(ledger.case_started, 1), step(ledger.item_uploading, item_id)])
    upload_id = ledger.upload_creating(file_id, part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    return item_id, upload_id


def test_recorded_then_read_the_read_sees_what_the_steps_wrote(one_case: Ledger) -> None:
    ledger = one_case
    item_id, upload_id = _initialized_upload(ledger)
    for number, size in ((1, 5 * MiB), (2, 5 * MiB), (3, 2 * MiB)):
        ledger.part_sent(upload_id, number, size=size, etag=f'"{number}"', md5=f"{number}" * 32)
    # On PostgreSQL the steps' COMMIT goes with the read's statements, in one round trip.
    results, work, failed = ledger.record_then_read(
        [step(ledger.upload_completed, upload_id), step(ledger.item_uploaded, item_id)], step(ledger.case_work, 1)
    )
    assert (results, failed) == ([True, True], None)
    assert work is not None and work.items[0].state == "uploaded"
    assert work.items[0].files[0].upload is not None and work.items[0].files[0].upload.state == "completed"
    assert ledger.case_work(1) == work  # committed: a read of its own sees the same


def test_a_read_that_fails_after_the_steps_leaves_them_recorded_and_says_why(one_case: Ledger) -> None:
    ledger = one_case
    _, upload_id = _initialized_upload(ledger)
    results, answer, failed = ledger.record_then_read(
        [step(ledger.upload_aborted, upload_id, reason="the file changed")], step(ledger.upload, 10_000)
    )
    assert (results, answer) == ([True], None)
    assert isinstance(failed, LedgerError) and "no upload 10000" in str(failed)
    assert ledger.upload(upload_id).state == "aborted"  # the step stays recorded: the caller reports it
    assert ledger.case_started(1) is False  # and the ledger goes on in transactions of its own


def test_steps_on_one_row_see_each_others_writes(one_case: Ledger) -> None:
    ledger = one_case
    item_id = ledger.case_work(1).items[0].id
    before = len(ledger.events())
    # Read ahead once, the item's row is handed from one step to the next as the step wrote it.
    assert ledger.record_together(
        [step(ledger.case_started, 1), step(ledger.item_uploading, item_id), step(ledger.item_failed, item_id, "x")]
    ) == [True, True, True]
    assert [(e["kind"], e["from_state"], e["to_state"]) for e in ledger.events()[before:]] == [
        ("case.running", "planned", "running"),
        ("item.uploading", "planned", "uploading"),
        ("item.failed", "uploading", "failed"),
    ]
    assert ledger.case_work(1).items[0].last_error == "x"


def test_a_postgresql_commit_held_for_the_next_read_keeps_nothing_when_a_write_before_it_fails(
    ledger: Ledger,
) -> None:
    import psycopg

    from gcbulk.state.pg_store import PgDatabase

    db = ledger.db
    if not isinstance(db, PgDatabase):
        pytest.skip("only the PostgreSQL store holds a COMMIT back for the next statement")
    db.execute("INSERT INTO worker_holdings (worker_id, limit_name, held) VALUES ('w1', 'uploads', 1)")
    with db.commit_rides_next():
        with db.atomic():
            db.execute("UPDATE worker_holdings SET held = 2 WHERE worker_id = 'w1'")
            db.execute("UPDATE worker_holdings SET held = held / 0 WHERE worker_id = 'w1'")  # fails when sent
        assert not db.commit_lost  # nothing sent yet: the COMMIT waits for the read
        with pytest.raises(psycopg.errors.DivisionByZero):
            db.execute("SELECT held FROM worker_holdings WHERE worker_id = 'w1'")
        assert db.commit_lost
    assert db.execute("SELECT held FROM worker_holdings WHERE worker_id = 'w1'").fetchone() == (1,)  # rolled back
    with db.commit_rides_next():  # and the connection takes the next transaction
        with db.atomic():
            db.execute("UPDATE worker_holdings SET held = 3 WHERE worker_id = 'w1'")
        assert db.execute("SELECT held FROM worker_holdings WHERE worker_id = 'w1'").fetchone() == (3,)
    assert not db.commit_lost

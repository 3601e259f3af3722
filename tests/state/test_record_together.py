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

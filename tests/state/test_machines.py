"""Every state machine, every pair of states: allowed moves apply, repeats are no-ops, everything else is refused."""

from __future__ import annotations

import itertools

import pytest

from gcbulk.state.ledger import Ledger
from gcbulk.state.machines import (
    MACHINES,
    ConflictingRepeat,
    IllegalTransition,
    StateMachine,
    check_transition,
)
from tests.state.conftest import MiB

_TABLE_KEY = {
    "job": ("job", "id = 1"),
    "case": ("cases", "id = 1"),
    "display_set": ("display_sets", "case_id = 1"),
    "item": ("items", "id = 1"),
    "upload": ("uploads", "id = 1"),
    "part": ("parts", "upload_id = 1 AND number = 1"),
}
_KEYS = {"job": 1, "case": 1, "display_set": 1, "item": 1, "upload": 1, "part": (1, 1)}


def _all_pairs() -> list[tuple[str, str, str]]:
    return [
        (kind, current, target)
        for kind, machine in MACHINES.items()
        if kind in _TABLE_KEY  # the upload side's objects; the results side tests its own
        for current, target in itertools.product(sorted(machine.states), repeat=2)
    ]


def _state(ledger: Ledger, kind: str) -> str:
    table, where = _TABLE_KEY[kind]
    return ledger.db.execute(f"SELECT state FROM {table} WHERE {where}").fetchone()[0]


def _force_state(ledger: Ledger, kind: str, state: str) -> None:
    """Test setup only: put the object straight into ``state``, as if earlier transitions had led there."""
    table, where = _TABLE_KEY[kind]
    ledger.db.execute(f"UPDATE {table} SET state = ? WHERE {where}", (state,))


@pytest.fixture
def every_object(one_case: Ledger) -> Ledger:
    """One row of every kind: the job, case 1, its display set, item 1, upload 1 and its part 1."""
    ledger = one_case
    file_id = ledger.case_work(1).items[0].files[0].id
    upload_id = ledger.upload_creating(file_id, part_size=5 * MiB)
    ledger.upload_initialized(upload_id, pk="u-1", s3_upload_id="s3-1")
    ledger.part_sent(upload_id, 1, size=5 * MiB, etag='"e1"', md5="0" * 32)
    return ledger


@pytest.mark.parametrize(("kind", "current", "target"), _all_pairs())
def test_transition_is_applied_refused_or_a_no_op_exactly_as_the_machine_says(
    every_object: Ledger, kind: str, current: str, target: str
) -> None:
    ledger = every_object
    machine = MACHINES[kind]
    _force_state(ledger, kind, current)
    events_before = len(ledger.events())
    if current == target:
        assert ledger.transition(kind, _KEYS[kind], target) is False
        assert len(ledger.events()) == events_before
    elif machine.allows(current, target):
        assert ledger.transition(kind, _KEYS[kind], target) is True
        event = ledger.events()[-1]
        assert (event["kind"], event["from_state"], event["to_state"]) == (f"{kind}.{target}", current, target)
    else:
        with pytest.raises(IllegalTransition, match=f"cannot go from {current!r} to {target!r}"):
            ledger.transition(kind, _KEYS[kind], target)
        assert len(ledger.events()) == events_before
    assert _state(ledger, kind) == (target if current == target or machine.allows(current, target) else current)


@pytest.mark.parametrize("machine", MACHINES.values(), ids=lambda m: m.kind)
def test_every_state_is_reachable_from_an_initial_state(machine: StateMachine) -> None:
    reached = set(machine.initial)
    frontier = list(machine.initial)
    while frontier:
        for target in machine.moves[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == machine.states


def test_a_state_the_machine_does_not_know_is_refused(one_case: Ledger) -> None:
    with pytest.raises(IllegalTransition, match="'case' 1|case 1"):
        one_case.transition("case", 1, "teleported")


def test_repeat_with_another_identity_is_refused() -> None:
    machine = MACHINES["display_set"]
    assert check_transition(machine, 1, "created", "created", {"pk": "a"}, {"pk": "a"}) is False
    with pytest.raises(ConflictingRepeat, match="pk='a'.*pk='b'"):
        check_transition(machine, 1, "created", "created", {"pk": "a"}, {"pk": "b"})


def test_display_set_recorded_with_another_pk_is_refused(one_case: Ledger) -> None:
    one_case.display_set_creating(1)
    assert one_case.display_set_created(1, "ds-1") is True
    assert one_case.display_set_created(1, "ds-1") is False
    with pytest.raises(ConflictingRepeat):
        one_case.display_set_created(1, "ds-2")
    assert one_case.case_work(1).display_set.pk == "ds-1"


def test_unknown_object_is_reported_by_kind_and_key(one_case: Ledger) -> None:
    from gcbulk.state.ledger import UnknownRow

    with pytest.raises(UnknownRow, match="no case 99"):
        one_case.case_started(99)
    with pytest.raises(ValueError, match="unknown ledger object kind 'answer'"):
        one_case.transition("answer", 1, "done")
    with pytest.raises(ValueError, match="identified by upload_id, number"):
        one_case.transition("part", 1, "sent")

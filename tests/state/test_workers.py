"""Several workers on one ledger: each runnable case leased to one worker at a time, a dead worker's cases taken over
once its lease runs out, and server limits whose units are counted across every live worker."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gcbulk.state.ledger import Ledger
from gcbulk.state.workers import PlanningLockTimeout
from tests.state.conftest import BINDING, planned_case, record

LEASE = 30.0
EXPIRED = -1.0  # a lease that has already run out: what a dead worker leaves behind


def on_postgres(ledger_path: Path | str) -> bool:
    return isinstance(ledger_path, str)


@pytest.fixture
def five_cases(ledger: Ledger) -> Ledger:
    record(ledger, [planned_case(f"p{n}") for n in range(1, 6)])
    return ledger


def claim_all(ledger: Ledger, worker: str) -> list[int]:
    claimed: list[int] = []
    while (claim := ledger.claim_case(worker, lease_seconds=LEASE, running=claimed)) is not None:
        claimed.append(claim.case_id)
    return claimed


def test_a_worker_claims_every_runnable_case_once_oldest_first(five_cases: Ledger) -> None:
    five_cases.register_worker("w1", host="h", pid=1)
    claimed = claim_all(five_cases, "w1")
    assert claimed == sorted(claimed) and len(claimed) == 5


def test_a_case_leased_by_a_live_worker_is_not_claimed_by_another(five_cases: Ledger, ledger_path: Path | str) -> None:
    if not on_postgres(ledger_path):
        pytest.skip("a SQLite ledger admits one process: there is no other worker")
    with Ledger.open(ledger_path, BINDING) as second:
        first_claims = claim_all(five_cases, "w1")
        assert second.claim_case("w2", lease_seconds=LEASE) is None
        assert second.runnable_leased_elsewhere("w2").cases == 5
        assert second.runnable_leased_elsewhere("w2").workers == ("w1",)
        five_cases.release_case("w1", first_claims[0])
        assert second.claim_case("w2", lease_seconds=LEASE).case_id == first_claims[0]


def test_an_expired_lease_is_taken_over_and_the_takeover_recorded(five_cases: Ledger, ledger_path: Path | str) -> None:
    if not on_postgres(ledger_path):
        pytest.skip("a SQLite ledger admits one process: there is no other worker")
    dead = five_cases.claim_case("dead-worker", lease_seconds=EXPIRED)
    with Ledger.open(ledger_path, BINDING) as survivor:
        claim = survivor.claim_case("w2", lease_seconds=LEASE)
    assert claim.case_id == dead.case_id and claim.taken_over_from == "dead-worker"
    assert [e["kind"] for e in five_cases.events(case_id=dead.case_id)][-1] == "case_taken_over"


def test_on_sqlite_leases_of_an_earlier_killed_process_never_hold_a_case_back(
    five_cases: Ledger, ledger_path: Path | str
) -> None:
    if on_postgres(ledger_path):
        pytest.skip("on PostgreSQL a live lease of another worker does hold the case")
    five_cases.claim_case("killed-process", lease_seconds=LEASE)
    assert len(claim_all(five_cases, "restarted-process")) == 5


def test_a_heartbeat_renews_leases_and_names_the_cases_this_worker_lost(
    five_cases: Ledger, ledger_path: Path | str
) -> None:
    if not on_postgres(ledger_path):
        pytest.skip("a SQLite ledger admits one process: no case can be lost to another")
    five_cases.register_worker("w1", host="h", pid=1)
    kept = five_cases.claim_case("w1", lease_seconds=LEASE).case_id
    stalled = five_cases.claim_case("w1", lease_seconds=EXPIRED, running=[kept]).case_id
    with Ledger.open(ledger_path, BINDING) as other:
        assert other.claim_case("w2", lease_seconds=LEASE).case_id == stalled
    assert five_cases.heartbeat("w1", lease_seconds=LEASE, running=[kept, stalled]) == [stalled]


def test_a_clean_stop_frees_the_workers_units_and_leaves_its_unfinished_cases_to_others_at_once(
    five_cases: Ledger, ledger_path: Path | str
) -> None:
    five_cases.register_worker("w1", host="h", pid=1)
    claimed = claim_all(five_cases, "w1")
    five_cases.reserve_units("w1", "live uploads", held=3, ceiling=10, lease_seconds=LEASE)
    five_cases.worker_stopped("w1")
    view = {row.worker_id: row for row in five_cases.workers_view(lease_seconds=LEASE)}
    assert view["w1"].stopped and not view["w1"].live and dict(view["w1"].holdings) == {}
    if not on_postgres(ledger_path):
        return  # one process at a time: the next one starts from the oldest case anyway
    with Ledger.open(ledger_path, BINDING) as other:
        # far past its own cursor: a stopped worker's cases are taken over, not waited for
        claim = other.claim_case("w2", lease_seconds=LEASE, after_id=max(claimed))
    assert claim is not None and claim.case_id == claimed[0] and claim.taken_over_from == "w1"


def test_a_pass_claims_each_case_once_in_order_after_its_cursor(five_cases: Ledger) -> None:
    first = five_cases.claim_case("w1", lease_seconds=LEASE)
    five_cases.release_case("w1", first.case_id)  # it ended, still runnable (e.g. it waits for the next pass)
    second = five_cases.claim_case("w1", lease_seconds=LEASE, after_id=first.case_id)
    assert second.case_id > first.case_id


def test_units_under_a_shared_limit_never_exceed_its_ceiling_across_workers(ledger: Ledger) -> None:
    for worker in ("w1", "w2"):
        ledger.register_worker(worker, host="h", pid=1)
    assert ledger.reserve_units("w1", "live uploads", held=6, ceiling=10, lease_seconds=LEASE)
    assert not ledger.reserve_units("w2", "live uploads", held=5, ceiling=10, lease_seconds=LEASE)
    assert ledger.reserve_units("w2", "live uploads", held=4, ceiling=10, lease_seconds=LEASE)
    assert ledger.reserve_units("w1", "live uploads", held=2, ceiling=10, lease_seconds=LEASE), "lowering always fits"
    assert ledger.shared_units("live uploads", lease_seconds=LEASE) == {"external": 0, "w1": 2, "w2": 4}


def test_uploads_the_server_counts_beyond_the_workers_take_room(ledger: Ledger) -> None:
    ledger.register_worker("w1", host="h", pid=1)
    ledger.reserve_units("w1", "live uploads", held=2, ceiling=10, lease_seconds=LEASE)
    # 9 on the server: this worker's 2 and 7 of another tool's
    assert ledger.set_external_units("w1", "live uploads", server_count=9, lease_seconds=LEASE) == 7
    assert ledger.reserve_units("w1", "live uploads", held=3, ceiling=10, lease_seconds=LEASE)
    assert not ledger.reserve_units("w1", "live uploads", held=4, ceiling=10, lease_seconds=LEASE)


def test_a_dead_workers_units_stop_counting_after_a_lease(ledger: Ledger) -> None:
    for worker in ("dead", "w2"):
        ledger.register_worker(worker, host="h", pid=1)
    ledger.reserve_units("dead", "live uploads", held=10, ceiling=10, lease_seconds=LEASE)
    assert not ledger.reserve_units("w2", "live uploads", held=1, ceiling=10, lease_seconds=LEASE)
    # Its heartbeat is older than a (here negative, so already elapsed) lease: it no longer counts.
    assert ledger.reserve_units("w2", "live uploads", held=1, ceiling=10, lease_seconds=EXPIRED)


def test_a_worker_alone_may_exceed_the_ceiling_as_one_oversized_case_is_admitted_alone(ledger: Ledger) -> None:
    ledger.register_worker("w1", host="h", pid=1)
    assert ledger.reserve_units("w1", "live uploads", held=12, ceiling=10, lease_seconds=LEASE)


def test_concurrent_claims_from_four_connections_give_every_case_to_exactly_one(
    ledger: Ledger, ledger_path: Path | str
) -> None:
    if not on_postgres(ledger_path):
        pytest.skip("a SQLite ledger admits one process")
    record(ledger, [planned_case(f"c{n:03d}") for n in range(60)])
    claims: dict[str, list[int]] = {}

    def worker(name: str) -> None:
        with Ledger.open(ledger_path, BINDING) as own:
            claims[name] = claim_all(own, name)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [case for got in claims.values() for case in got]
    assert len(every) == 60 and len(set(every)) == 60


def test_a_plan_lock_held_past_the_deadline_ends_the_wait_naming_its_holder_and_what_to_do(
    ledger: Ledger, ledger_path: Path | str
) -> None:
    if not on_postgres(ledger_path):
        pytest.skip("a SQLite ledger admits one process: nobody else can hold the plan")
    with Ledger.open(ledger_path, BINDING) as stuck_planner, stuck_planner.planning_lock():
        with pytest.raises(
            PlanningLockTimeout,
            match=r"(?s)plan lock is held by server process \d+.*"
            r"pg_stat_activity.*run again",
        ):
            with ledger.planning_lock(deadline_seconds=0.3):
                pytest.fail("the lock was taken while another connection held it")
    with ledger.planning_lock(deadline_seconds=0.3):
        pass  # once its holder lets go, the lock is taken at once


# A ledger change's writes travel to PostgreSQL with its next read or its COMMIT (state/pg_store.py): on both stores
# a change is still all or nothing, and what a caller reads of a write (its rowcount, its new id) is the same.


def test_a_change_whose_last_write_fails_leaves_none_of_its_writes_and_the_ledger_usable(ledger: Ledger) -> None:
    with pytest.raises(Exception, match="(?i)unique"):
        with ledger.db.atomic():
            ledger.db.execute("INSERT INTO shared_limits (limit_name, external) VALUES (?, 1)", ("first",))
            ledger.db.execute("INSERT INTO shared_limits (limit_name, external) VALUES (?, 2)", ("second",))
            ledger.db.execute("INSERT INTO shared_limits (limit_name, external) VALUES (?, 3)", ("second",))
    assert ledger.rows("SELECT * FROM shared_limits") == []
    with ledger.db.atomic():
        ledger.db.execute("INSERT INTO shared_limits (limit_name, external) VALUES (?, 4)", ("after",))
    assert ledger.scalar("SELECT external FROM shared_limits WHERE limit_name = ?", ("after",)) == 4


def test_a_nested_block_that_raises_undoes_only_its_own_writes(ledger: Ledger) -> None:
    with ledger.db.atomic():
        ledger.db.execute("INSERT INTO shared_limits (limit_name, external) VALUES (?, 1)", ("outer",))
        with pytest.raises(ValueError), ledger.db.atomic():
            ledger.db.execute("INSERT INTO shared_limits (limit_name, external) VALUES (?, 2)", ("inner",))
            raise ValueError("the nested change gives up")
        with pytest.raises(ValueError), ledger.db.atomic():
            ledger.db.execute("INSERT INTO shared_limits (limit_name, external) VALUES (?, 3)", ("read",))
            assert ledger.scalar("SELECT count(*) FROM shared_limits") == 2, "its writes are seen by its reads"
            raise ValueError("and gives up after they were sent")
    assert [row["limit_name"] for row in ledger.rows("SELECT limit_name FROM shared_limits")] == ["outer"]


def test_a_write_in_a_change_tells_its_rowcount_and_new_id_as_it_would_alone(five_cases: Ledger) -> None:
    with five_cases.db.atomic():
        changed = five_cases.db.execute("UPDATE cases SET attempts = attempts + 1 WHERE id > ?", (0,))
        event = five_cases.db.execute(
            "INSERT INTO events (at, kind, subject, subject_id, data) VALUES (?, 'note', 'job', 1, '{}')", ("now",)
        )
        assert changed.rowcount == 5
        assert event.lastrowid == five_cases.scalar("SELECT max(id) FROM events")

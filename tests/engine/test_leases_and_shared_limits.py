"""A worker's side of leases and shared limits, on a real PostgreSQL ledger with two workers' connections: a
reservation waits while the other worker holds the room and goes through once it releases; a stopped or
too-long wait says so; a heartbeat that finds a case taken over cancels this worker's work on it; and the
workers learn their limits against the job's shared latency floors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.errors import Interrupted
from gcbulk.engine.gc.pacer import AdaptiveLimiter, api_policy, import_policy
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.leases import CaseLeases
from gcbulk.engine.upload.orphans import abort_orphan_uploads
from gcbulk.engine.upload.progress import EventLog
from gcbulk.engine.upload.server_limits import CountingGate, GateWaitTimeout, ImportPacer
from gcbulk.engine.upload.shared_limits import SharedGate, share_latency_floors, with_shared_floors
from tests.state.conftest import BINDING, planned_case, record

LEASE = 30.0


@pytest.fixture
async def two_workers(pg_database: str, tmp_path: Path) -> AsyncIterator[tuple[Journal, Journal]]:
    dsn = pg_database
    async with LedgerRunner(dsn, BINDING) as first, LedgerRunner(dsn, BINDING) as second:
        journals = (Journal(first, EventLog(tmp_path / "w1.jsonl")), Journal(second, EventLog(tmp_path / "w2.jsonl")))
        for journal, name in zip(journals, ("w1", "w2"), strict=True):
            await journal.runner.run(journal.runner.ledger.register_worker, name, host="test", pid=1)
        yield journals


def gate(journal: Journal, worker: str, *, ceiling: int = 10, wait_timeout: float | None = None) -> SharedGate:
    return SharedGate(
        CountingGate(ceiling, name="live uploads"),
        journal,
        worker_id=worker,
        lease_seconds=LEASE,
        wait_timeout=wait_timeout,
    )


async def test_a_reservation_waits_for_the_other_workers_release(two_workers: tuple[Journal, Journal]) -> None:
    first, second = gate(two_workers[0], "w1"), gate(two_workers[1], "w2")
    await first.acquire(8)
    taken = anyio.Event()

    async def second_takes_three() -> None:
        await second.acquire(3)
        taken.set()

    async with anyio.create_task_group() as group:
        group.start_soon(second_takes_three)
        await anyio.sleep(0.5)
        assert not taken.is_set(), "8 + 3 does not fit a ceiling of 10 shared by both workers"
        await first.release(2)  # the release reaches the ledger: 6 + 3 fits
        with anyio.fail_after(5):
            await taken.wait()
    assert await two_workers[0].read(two_workers[0].ledger.shared_units, "live uploads", lease_seconds=LEASE) == {
        "external": 0,
        "w1": 6,
        "w2": 3,
    }


async def test_units_still_waiting_for_room_never_block_a_request_that_fits(
    two_workers: tuple[Journal, Journal],
) -> None:
    first, second = gate(two_workers[0], "w1"), gate(two_workers[1], "w2")
    await second.acquire(5)
    async with anyio.create_task_group() as group:
        group.start_soon(first.acquire, 6)  # 5 + 6 > 10: waits for w2
        await anyio.sleep(0.3)
        with anyio.fail_after(5):
            assert await first.acquire(4) == 4, "5 + 4 fits: the 6 still waiting hold no room"
        await second.release(5)  # now the 6 fit too
    assert await two_workers[0].read(two_workers[0].ledger.shared_units, "live uploads", lease_seconds=LEASE) == {
        "external": 0,
        "w1": 10,
        "w2": 0,
    }


async def test_a_wait_under_a_shared_limit_ends_on_stop_and_at_its_deadline(
    two_workers: tuple[Journal, Journal],
) -> None:
    await gate(two_workers[0], "w1").acquire(10)
    stopped = gate(two_workers[1], "w2")
    async with anyio.create_task_group() as group:

        async def stop_soon() -> None:
            await anyio.sleep(0.3)
            stopped.stop()

        group.start_soon(stop_soon)
        with pytest.raises(Interrupted):
            await stopped.acquire(1)
    assert stopped.held == 0, "units a failed wait took locally are given back"
    with pytest.raises(GateWaitTimeout, match="shared by this job's workers"):
        await gate(two_workers[1], "w2", wait_timeout=0.5).acquire(1)


async def test_a_heartbeat_cancels_work_on_a_case_another_worker_took_over(
    two_workers: tuple[Journal, Journal],
) -> None:
    first, second = two_workers
    await first.runner.with_ledger(lambda ledger: record(ledger, [planned_case("p1")]))
    leases = CaseLeases(first, "w1", lease_seconds=LEASE, heartbeat_seconds=LEASE / 3)
    case_id = await leases.next_case(anyio.Event())
    # w1 stalls past its lease: expire it, and w2 claims the case
    await first.runner.run(first.runner.ledger.claim_case, "w1", lease_seconds=-1.0)
    assert (await second.runner.run(second.runner.ledger.claim_case, "w2", lease_seconds=LEASE)).case_id == case_id
    went_on = False
    with leases.scope(case_id):
        assert await leases.beat() == [case_id]
        await anyio.sleep(5)  # w1's work on the case: cancelled here
        went_on = True
    assert not went_on and leases.scope(case_id).cancelled_caught
    await leases.finished(case_id, ended=True)
    assert (await second.read(second.ledger.workers_view, lease_seconds=LEASE))[1].cases_leased == 1, (
        "w2 keeps its lease"
    )


def test_a_worker_learns_against_the_lowest_floor_the_live_workers_measured() -> None:
    policy = api_policy(16)
    late = policy.on_success(policy.start(), "uploads/", 0.8, 1)  # joined a loaded server: 0.8 s looks like its floor
    shared = with_shared_floors(late, [{"uploads/": 0.1}, {"uploads/": 0.3, "other/": 0.2}])
    assert shared.floors == {"uploads/": 0.1, "other/": 0.2}
    assert policy.on_success(shared, "uploads/", 0.8, 2).limit < shared.limit, "0.8 s is queueing: it backs off"
    assert with_shared_floors(late, [{"uploads/": 2.0}]).floors == {"uploads/": 0.8}, "only ever lowered"


async def test_a_worker_joining_a_loaded_server_starts_from_the_others_floors_and_without_a_slow_start(
    two_workers: tuple[Journal, Journal],
) -> None:
    """Slow start grows the limit by one per answer: right for a worker alone, an overshoot for one whose
    colleagues already keep the server busy (every worker's requests would queue behind its burst)."""
    first, second = two_workers
    await first.runner.run(
        first.runner.ledger.heartbeat,
        "w1",
        lease_seconds=LEASE,
        running=[],
        api_limit=3,
        imports_limit=8,
        progress={"api_floors": {"POST uploads/": 0.06}, "import_floors": {}},
    )
    pacer = ImportPacer(CountingGate(16, name="imports in flight"), import_policy(16))
    joining = AdaptiveLimiter(api_policy(16))
    share_latency_floors(joining, pacer, "w2", await second.read(second.ledger.workers_view, lease_seconds=LEASE))
    assert joining.state.floors == {"POST uploads/": 0.06}
    assert not joining.state.slow_start
    alone = AdaptiveLimiter(api_policy(16))
    share_latency_floors(
        alone,
        pacer,
        "w1",
        [row for row in await first.read(first.ledger.workers_view, lease_seconds=LEASE) if row.worker_id == "w1"],
    )
    assert alone.state.slow_start, "a worker alone keeps its slow start"


async def test_a_lost_create_waits_while_another_worker_has_a_create_of_that_filename_on_the_wire(
    two_workers: tuple[Journal, Journal], client: GrandChallengeClient
) -> None:
    first, second = two_workers
    await first.runner.with_ledger(lambda ledger: record(ledger, [planned_case("p1"), planned_case("p2")]))

    async def file_of(title: str) -> int:
        case_id = await first.runner.run(first.runner.ledger.case_id_by_title, title)
        return (await first.read(first.ledger.case_work, case_id)).items[0].files[0].id

    await first.runner.run(
        first.runner.ledger.upload_creating, await file_of("p1"), part_size=5 * 1024**2
    )  # w1's, answer lost
    theirs = await second.runner.run(second.runner.ledger.claim_case, "w2", lease_seconds=LEASE)
    await second.runner.run(
        second.runner.ledger.upload_creating, await file_of("p2"), part_size=5 * 1024**2
    )  # w2's, on the wire
    unknown = await client.create_upload("ct.mha")  # w1's orphan, or w2's upload whose answer is on the way

    while_busy = await abort_orphan_uploads(client, first, worker_id="w1")
    assert (while_busy.deferred, while_busy.aborted) == (1, []), "w2's answer may be on the way: not judged"
    await second.runner.run(second.runner.ledger.release_case, "w2", theirs.case_id)  # w2 is done (or gone)
    assert (await abort_orphan_uploads(client, first, worker_id="w1")).aborted == [str(unknown["pk"])]


async def test_a_create_another_worker_sends_while_this_one_sweeps_is_left_to_it(
    two_workers: tuple[Journal, Journal], client: GrandChallengeClient
) -> None:
    """Seen with four workers under load: a worker settling with the server after its cases took the leases from
    before its study listing; another worker claimed a case and sent its create meanwhile; the sweep found no such
    upload on the server yet and abandoned the row, and the create's answer then failed that case."""
    first, second = two_workers
    await first.runner.with_ledger(lambda ledger: record(ledger, [planned_case("p1")]))
    theirs = await second.runner.run(second.runner.ledger.claim_case, "w2", lease_seconds=LEASE)
    file_id = (await second.read(second.ledger.case_work, theirs.case_id)).items[0].files[0].id
    upload_id = await second.runner.run(second.runner.ledger.upload_creating, file_id, part_size=5 * 1024**2)

    sweep = await abort_orphan_uploads(client, first, worker_id="w1")  # w2's answer is on the way
    assert (sweep.looked_for, sweep.aborted) == (0, [])
    created = await client.create_upload("ct.mha")
    assert await second.runner.run(
        second.runner.ledger.upload_initialized, upload_id, pk=str(created["pk"]), s3_upload_id=created["s3_upload_id"]
    ), "w2 records its answer"

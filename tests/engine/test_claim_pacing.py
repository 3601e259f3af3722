"""Beside other workers, a worker claims a case only when it can start on it: at most two of its cases wait to start
moving files, so it does not hoard cases (leased: no other worker may run them) that it cannot work on yet. A worker
alone on its job claims ahead freely."""

from __future__ import annotations

import anyio

from gcbulk.engine.upload.claim_pacing import ClaimPacer, uploads_under_way


async def _claims_within(pacer: ClaimPacer, seconds: float, limit: int = 10) -> int:
    claimed = 0
    with anyio.move_on_after(seconds):
        while claimed < limit:
            await pacer.before_claim()
            claimed += 1
    return claimed


async def test_a_worker_beside_others_holds_at_most_two_cases_that_have_not_started_moving_files() -> None:
    pacer = ClaimPacer(2)
    first_file_may_start = anyio.Event()

    async def case(n: int) -> None:
        with pacer.case():
            if n == 0:
                await first_file_may_start.wait()
                async with anyio.create_task_group() as files:  # each file's own task tells, as FileUpload does
                    for _ in range(3):
                        files.start_soon(_a_file_takes_its_slot)
            await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as cases:
            for n in range(2):
                await pacer.before_claim()
                cases.start_soon(case, n)
            assert await _claims_within(pacer, 0.2) == 0, "two cases wait to start moving files: no third claim"
            first_file_may_start.set()
            assert await _claims_within(pacer, 1.0) == 1, "the first case moves files: one more claim, not three"
            cases.cancel_scope.cancel()


async def _a_file_takes_its_slot() -> None:
    uploads_under_way()


async def test_a_case_that_ends_before_moving_a_file_gives_its_place_back() -> None:
    pacer = ClaimPacer(1)
    with anyio.fail_after(10):
        await pacer.before_claim()
        with pacer.case():
            pass  # failed, or nothing to upload and done
        await pacer.before_claim()  # does not wait
        pacer.unclaimed()  # no case came of that claim
        await pacer.before_claim()


async def test_a_worker_alone_claims_ahead_freely() -> None:
    pacer = ClaimPacer(None)
    with anyio.fail_after(10):
        assert await _claims_within(pacer, 0.2, limit=50) == 50
        with pacer.case():
            uploads_under_way()  # nothing to give back

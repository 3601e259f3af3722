"""Follow mode with a blocked case: the clean cases are uploaded, what is blocked is logged once per change."""

from __future__ import annotations

import os
from pathlib import Path

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine import settings
from gcbulk.engine.service.follow import EXIT_OK
from gcbulk.engine.service.job_service import JobService
from tests.container.conftest import JsonLog, follow_settings, following, poll
from tests.imaging import make_mha


async def test_follow_uploads_the_clean_cases_and_logs_a_blocked_one_once_per_change(
    tmp_path: Path, emulator: RunningEmulator, json_log: JsonLog
) -> None:
    for n in (1, 2):
        make_mha(tmp_path / "cases" / f"patient{n}" / "ct.mha", (4, 8, 8), seed=n)
    (tmp_path / "cases" / "patient2" / "empty.mha").write_bytes(b"")  # blocks patient2
    raw = os.fsencode(tmp_path / "cases") + b"/p\xe9tient"  # not UTF-8: blocked, and never a crash
    os.mkdir(raw)
    make_mha(tmp_path / "ct.mha", (4, 8, 8), seed=3)  # SimpleITK cannot write to a path that is not UTF-8
    os.rename(tmp_path / "ct.mha", raw + b"/ct.mha")
    job = tmp_path / "job.toml"
    job.write_text(
        f'reader_study = "example-study"\nbase_url = "{emulator.base_url}"\ncase_root = "cases"\n'
        f'ca_file = "{emulator.ca_file}"\n\n[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n'
    )
    resolved = follow_settings(job, emulator, GCBULK_PROGRESS_INTERVAL="5")
    events = json_log.events
    requests, listing = emulator.context.counters.requests, "GET api:/api/v1/reader-studies/display-sets/"

    async def scenario(running: JobService) -> int:
        plans = 0
        plan = running.plan

        async def counted_plan(**how: bool) -> object:  # counts the follow loop's polls; the plan is the real one
            nonlocal plans
            plans += 1
            return await plan(**how)

        running.plan = counted_plan  # type: ignore[method-assign]
        async with following(running) as exit_code:

            async def clean_case_done() -> bool:
                counts = await running.runner.run(running.runner.ledger.counts_by_state)
                return counts["case"].get("done") == 1

            await poll(clean_case_done, "patient1 uploaded")
            seen = plans

            async def next_poll() -> bool:  # its round began: the round that uploaded patient1 has ended
                return plans > seen

            await poll(next_poll, "the poll after the upload")
            seen, listed = plans, requests[listing]

            async def five_more_polls() -> bool:
                return plans >= seen + 5

            await poll(five_more_polls, "five more polls with nothing changed")
            assert len(events("cases_blocked")) == 1
            # Blocked for its files, not its title: no newer listing of the study could free it, so none is sent.
            assert requests[listing] == listed
            (tmp_path / "cases" / "patient2" / "empty.mha").unlink()

            async def patient2_done() -> bool:
                counts = await running.runner.run(running.runner.ledger.counts_by_state)
                return counts["case"].get("done") == 2

            await poll(patient2_done, "patient2 uploaded once fixed")
            running.request_stop("test")
        return exit_code[0]

    code = await service_serve(resolved, scenario)
    assert code is None or code == EXIT_OK
    blocked = events("cases_blocked")
    assert [(e["cases"], e["newly_blocked"]) for e in blocked] == [(2, ["p\\xe9tient", "patient2"]), (1, [])]
    assert blocked[1]["unblocked"] == ["patient2"]
    assert sorted(ds.title for ds in emulator.context.store.display_sets.values()) == ["patient1", "patient2"]
    assert not events("fatal_configuration_error")


async def service_serve(resolved: settings.RunSettings, scenario) -> int | None:
    return await JobService(resolved).serve(scenario)

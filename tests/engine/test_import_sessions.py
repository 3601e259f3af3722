"""Each image import is tracked by its own upload session (docs/gc-api.md §2, §10): a refused segmentation fails its case
with the server's message within seconds, the rest of the run goes on, and the session list is never scanned."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.context import SCHEMAS
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.jobfile import load_job
from gcbulk.state.ledger import Ledger, default_ledger_path
from tests.engine.conftest import (
    FAST_ENGINE,
    assert_tutorial_values,
    make_tutorial_tree,
    run_job,
    write_job,
)
from tests.imaging import make_mask

BOUND = 60
SESSION_LIST = "GET api:/api/v1/cases/upload-sessions/"
OVERLAY_MESSAGE = "The valid voxel values for this segmentation are: {0, 1}"


@pytest.fixture(params=SCHEMAS)
def emulator_schema(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_a_refused_segmentation_fails_its_case_with_the_servers_message_and_the_rest_is_imported(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    cases = make_tutorial_tree(tmp_path / "cases", 3)
    make_mask(cases / "patient2" / "seg.mha", values=(0, 3))  # 3 is not an airway voxel value
    # A 1-hour import timeout: the case must fail on the session's answer, not on the timeout.
    config = dataclasses.replace(FAST_ENGINE, import_timeout=3600.0)
    with anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator, config)
    assert outcome.done == 2
    assert [title for title, _ in outcome.failed] == ["patient2"]
    assert "airway-segmentation" in outcome.failed[0][1] and OVERLAY_MESSAGE in outcome.failed[0][1]
    await assert_tutorial_values(client, ["patient1", "patient3"])
    # Tracked by pk: one GET per session, never a scan of the list (docs/gc-api.md §10: it is slow and grows forever).
    requests = emulator.context.counters.requests
    assert requests.get(SESSION_LIST, 0) == 0
    assert requests.get("POST api:/api/v1/cases/upload-sessions/", 0) == 6
    job = load_job(tmp_path / "job.toml")
    with Ledger.open(default_ledger_path(job.job_file), job.binding, job_file=job.job_file) as ledger:
        sessions = ledger.db.execute("SELECT upload_session_pk FROM items").fetchall()
    # Every imported item keeps its session; the failed one's is forgotten, so a retry gets a session of its own.
    assert len(sessions) == 6 and sum(1 for (pk,) in sessions if pk) == 5


async def test_a_server_that_refuses_upload_sessions_gets_the_uploads_attached_directly_and_says_so(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient, caplog: pytest.LogCaptureFixture
) -> None:
    from gcbulk.emulator.faults import FaultRule

    emulator.context.faults.replace([FaultRule(match="POST /api/v1/cases/upload-sessions/", status=405)])
    make_tutorial_tree(tmp_path / "cases", 2)
    job_file = write_job(tmp_path, emulator)
    with anyio.fail_after(BOUND):
        outcome = await run_job(job_file, emulator)
    assert outcome.done == 2 and not outcome.failed
    assert "refused to create an upload session" in caplog.text and "attaching uploads directly" in caplog.text
    events = (tmp_path / "events.jsonl").read_text()
    assert events.count('"upload_sessions_refused"') == 1  # said once, not per case
    await assert_tutorial_values(client)


async def test_each_image_is_sent_as_one_upload_session_aimed_at_its_display_set_and_no_values_patch(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    # docs/gc-api.md §10 path (b): POST cases/upload-sessions/ with display_set + interface imports at once — one request
    # per image where a Queued session plus a values PATCH (the server's dearest call) are two.
    make_tutorial_tree(tmp_path / "cases", 2)
    with anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator)
    assert outcome.done == 2 and not outcome.failed
    requests = emulator.context.counters.requests
    assert requests.get("POST api:/api/v1/cases/upload-sessions/", 0) == 4
    assert not [name for name in requests if name.startswith("PATCH api:/api/v1/reader-studies/display-sets/")]
    assert requests.get(SESSION_LIST, 0) == 0
    targets = sorted(
        (s.target_display_set_pk is not None, s.target_socket_slug)
        for s in emulator.context.store.upload_sessions.values()
    )
    assert targets == [(True, "airway-segmentation")] * 2 + [(True, "ct-image")] * 2
    await assert_tutorial_values(client)


async def test_a_lost_answer_to_an_aimed_session_is_looked_up_and_never_imports_the_uploads_twice(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    from gcbulk.emulator.faults import FaultRule

    # The server makes the first session, then its answer is lost (a 502 from a proxy after the server acted).
    emulator.context.faults.replace(
        [FaultRule(match="POST /api/v1/cases/upload-sessions/", status=502, phase="after", times=1)]
    )
    make_tutorial_tree(tmp_path / "cases", 1)
    with anyio.fail_after(BOUND):
        outcome = await run_job(write_job(tmp_path, emulator), emulator)
    assert outcome.done == 1 and not outcome.failed
    assert len(emulator.context.store.upload_sessions) == 2  # one per image: the lost one was found, not resent
    assert emulator.context.counters.requests.get(SESSION_LIST, 0) >= 1  # the one scan, on this rare path only
    job = load_job(tmp_path / "job.toml")
    with Ledger.open(default_ledger_path(job.job_file), job.binding, job_file=job.job_file) as ledger:
        recorded = {pk for (pk,) in ledger.db.execute("SELECT upload_session_pk FROM items").fetchall()}
    assert recorded == set(emulator.context.store.upload_sessions)

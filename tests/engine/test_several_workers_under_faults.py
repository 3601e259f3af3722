"""Three ``gcbulk run`` workers on one job (a PostgreSQL ledger) against an emulator that injects a mix of faults at a
moderate rate: refused calls (5xx), dropped connections, and lost answers — the server did the work, the client never
heard — on display-set creation, upload creation, part PUTs and upload completion; and, in a second test, one lost
answer to an image's upload session, found after its import consumed the uploads (the single-process case is
``tests/engine/test_lost_session_answer_after_import.py``).

The outcome must be what a fault-free run leaves: every case done once, by one display set holding that case's own
images in the right sockets, each imported once; no part stored twice except where S3 stored it and its answer was
lost (the only case in which a client must send it again); no empty upload left beyond those whose create answer was
lost; and the ledger (cases, display-set pks, done events, leases) agrees with the server.

Real processes, a real PostgreSQL server (``tests/pg_server.py``, skipped where PostgreSQL is not installed); each
worker is bounded by ``finish`` (``tests/engine/test_several_workers.py``), which fails with every worker's output
rather than hang.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from tests.engine.conftest import write_job
from tests.engine.test_several_workers import finish, ledger_rows, start_worker
from tests.imaging import make_mask, make_mha
from tests.soak.test_random_kills import server_outcome

CASES = 12
BIG_CASES = {3, 8}  # CTs of two 5 MiB parts: part PUTs and their lost answers happen within one file
SEED = 20261129

DISPLAY_SET_CREATE = "POST /api/v1/reader-studies/display-sets/"
UPLOAD_CREATE = "POST /api/v1/uploads/"
SESSION_CREATE = "POST /api/v1/cases/upload-sessions/"
# Rules are checked in order and only the first firing terminal rule applies: the lost answers come first.
LOST_ANSWERS = (  # the handler ran, the gateway lost its reply
    FaultRule(match=DISPLAY_SET_CREATE, probability=0.3, status=502, phase="after"),
    FaultRule(match=UPLOAD_CREATE, probability=0.1, status=502, phase="after"),
    FaultRule(match="PATCH */complete-multipart-upload/", probability=0.2, status=502, phase="after"),
    FaultRule(match="PUT s3", probability=0.08, status=502, phase="after"),
)
# Refused before any work, and connections dropped; on the transfer's calls only. A worker's start-up checks (the
# job's sockets, the study's display-set listing) give up after 2 retries by design (engine/service/job_service.py:
# a wrong address should fail fast), which is not what this test is about.
ONE_DISPLAY_SET = "/api/v1/reader-studies/display-sets/*/"  # a pk and more, never the listing
REFUSALS_AND_DROPS = (
    FaultRule(match="PUT s3", probability=0.05, status=503),
    FaultRule(match="PUT s3", probability=0.05, reset="request"),
    *(
        FaultRule(match=f"GET {path}", probability=0.05, reset="response")
        for path in (ONE_DISPLAY_SET, "/api/v1/uploads/*", "/api/v1/cases/*")
    ),
    *(
        FaultRule(match=f"{method} {path}", probability=0.03, status=503)
        for method, path in (
            ("POST", "/api/v1/reader-studies/display-sets/"),
            ("*", ONE_DISPLAY_SET),
            ("*", "/api/v1/uploads/*"),
            ("*", "/api/v1/cases/*"),
        )
    ),
)
# One lost answer to an image's upload session (aimed at its display set), looked up only once its import is over:
# the session list is slow to answer, as a long list on a busy server is.
LOST_SESSION_ANSWER = (
    FaultRule(match=SESSION_CREATE, status=502, phase="after", times=1),
    FaultRule(match="GET /api/v1/cases/upload-sessions/", latency_seconds=2.0),
)
# The worker's retry budget of a case (and of a file) is spent by every fault it meets: ~30 calls a case at the rates
# above would exhaust the default of 5 now and then by chance. This test is about the outcome, not the budget.
# No worker is killed here: a lease long enough that a stall of this loaded machine never looks like a death.
ENGINE = 'part_size = "5 MiB"\nlease_seconds = 10\nattempts_per_item = 40\n'


@pytest.fixture
def dsn(pg_database: str) -> str:
    return pg_database


def ct_width(n: int) -> int:
    """Each case's CT has its own width, so a display set holding another case's image is seen."""
    return (512 if n in BIG_CASES else 8) + n


def make_cases(root: Path) -> None:
    for n in range(1, CASES + 1):
        depth, height = (24, 256) if n in BIG_CASES else (4, 8)
        make_mha(root / f"patient{n}" / "ct.mha", (depth, height, ct_width(n)), seed=n)
        make_mask(root / f"patient{n}" / "seg.mha", (4, 8, 8), seed=n + 1000)


def wrong_values(emulator: RunningEmulator) -> dict[str, str]:
    """Display sets whose images are not their case's own: title → what is wrong."""
    store = emulator.context.store
    wrong = {}
    for display_set in store.display_sets.values():
        n = int(display_set.title.removeprefix("patient"))
        expected = {"ct-image": ("ct.mha", ct_width(n)), "airway-segmentation": ("seg.mha", 8)}
        found = {}
        for socket, value in display_set.values.items():
            image = store.images.get(value.image_pk)
            found[socket] = (image.name, image.width) if image is not None else None
        if found != expected:
            wrong[display_set.title] = f"expected {expected}, found {found}"
    return wrong


def run_three_workers(tmp_path: Path, emulator: RunningEmulator, dsn: str, rules: tuple[FaultRule, ...]) -> None:
    """Three workers do the job under ``rules``; then every check of the module docstring."""
    make_cases(tmp_path / "cases")
    job_file = write_job(tmp_path, emulator, engine=ENGINE)
    emulator.context.faults.replace(list(rules), SEED)
    workers = {f"w{n}": start_worker(job_file, dsn, f"w{n}", emulator) for n in range(1, 4)}
    ended = finish(workers, dsn)
    faults = {
        (rule["match"], rule.get("phase"), rule.get("status"), rule.get("reset")): rule["fired"]
        for rule in emulator.context.faults.describe()["rules"]
    }
    emulator.context.faults.replace([])  # nothing below may meet a fault
    for name, (code, output) in ended.items():
        assert code == 0, f"{name}: {output[-6000:]}"
    assert sum(faults.values()) >= 10, f"too few faults fired to mean anything: {faults}"

    # The server: one complete display set per case, each with its own case's images.
    outcome = server_outcome(emulator, {f"patient{n}" for n in range(1, CASES + 1)})
    assert outcome["duplicates"] == outcome["missing"] == outcome["unexpected"] == 0, (outcome, faults)
    assert wrong_values(emulator) == {}
    # Each image imported once: one upload session aimed at each socket of each display set.
    aimed = Counter(
        (session.target_display_set_pk, session.target_socket_slug)
        for session in emulator.context.store.upload_sessions.values()
        if session.target_display_set_pk
    )
    assert len(aimed) == 2 * CASES and set(aimed.values()) == {1}, f"an image was imported twice: {aimed}"
    # A part is stored twice only when S3 stored it and its answer was lost; an empty upload is left only by a
    # create whose answer was lost.
    stored_again = sum(n - 1 for n in emulator.context.counters.part_puts.values() if n > 1)
    assert stored_again <= faults[("PUT s3", "after", 502, None)], (emulator.context.counters.part_puts, faults)
    assert outcome["orphan_uploads"] <= faults[(UPLOAD_CREATE, "after", 502, None)], (outcome, faults)

    # The ledger agrees with the server.
    on_server = {ds.title: ds.pk for ds in emulator.context.store.display_sets.values()}
    in_ledger = {
        title: (pk, state)
        for title, pk, state in ledger_rows(
            dsn, "SELECT c.title, d.pk, d.state FROM cases c JOIN display_sets d ON d.case_id = c.id"
        )
    }
    assert in_ledger == {title: (pk, "done") for title, pk in on_server.items()}
    assert set(ledger_rows(dsn, "SELECT DISTINCT state FROM cases")) == {("done",)}
    done_events = Counter(case for (case,) in ledger_rows(dsn, "SELECT case_id FROM events WHERE kind = 'case.done'"))
    assert len(done_events) == CASES and set(done_events.values()) == {1}, f"a case was done twice: {done_events}"
    assert ledger_rows(dsn, "SELECT count(*) FROM cases WHERE lease_owner IS NOT NULL") == [(0,)]


def test_three_workers_under_faults_do_every_case_once(
    tmp_path: Path, threaded_emulator: RunningEmulator, dsn: str
) -> None:
    run_three_workers(tmp_path, threaded_emulator, dsn, LOST_ANSWERS + REFUSALS_AND_DROPS)


def test_three_workers_adopt_an_upload_session_whose_answer_was_lost(
    tmp_path: Path, threaded_emulator: RunningEmulator, dsn: str
) -> None:
    run_three_workers(tmp_path, threaded_emulator, dsn, LOST_SESSION_ANSWER + LOST_ANSWERS + REFUSALS_AND_DROPS)

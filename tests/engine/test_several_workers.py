"""Several ``gcbulk run`` processes on one job through a PostgreSQL ledger (issue 13), against the emulator: every
case is done once by one worker, a worker killed with SIGKILL mid-part leaves its cases to the others, who resume
them from the recorded parts (nothing S3 holds is sent again), and the server's live-upload limit holds for the
workers together.

Real processes and a real PostgreSQL server (``tests/pg_server.py``); skipped, saying why, where PostgreSQL is not
installed.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from gcbulk.emulator.server import RunningEmulator
from tests.engine.conftest import make_tutorial_tree, start_gcbulk, write_job
from tests.imaging import make_mask, make_mha
from tests.soak.test_random_kills import server_outcome

RUN_BOUND_SECONDS = 150  # a worker that has not ended by then has hung (a run here takes 10–40 s)
LEASE = "lease_seconds = 3\n"  # a dead worker's cases are taken over within seconds, not the default 30


def start_worker(job_file: Path, dsn: str, worker_id: str, emulator: RunningEmulator) -> subprocess.Popen:
    return start_gcbulk(emulator, "run", str(job_file), "--ledger", dsn, "--worker-id", worker_id)


def finish(workers: dict[str, subprocess.Popen], dsn: str) -> dict[str, tuple[int, str]]:
    """Each worker's exit code and output; a worker still running after the bound fails the test with every
    worker's output and the ledger's leases and holdings (what they waited for)."""
    deadline = time.monotonic() + RUN_BOUND_SECONDS
    ended = {}
    for name, worker in workers.items():
        try:
            out, err = worker.communicate(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            for other in workers.values():
                other.kill()
            outputs = {n: "".join(w.communicate()) for n, w in workers.items() if n not in ended}
            leases = ledger_rows(dsn, "SELECT id, state, lease_owner FROM cases WHERE lease_owner IS NOT NULL")
            held = ledger_rows(dsn, "SELECT * FROM worker_holdings")
            pytest.fail(
                f"{name} hung: leases {leases}, holdings {held}\n"
                + "\n".join(f"--- {n}\n{text[-6000:]}" for n, text in outputs.items())
            )
        ended[name] = (worker.returncode, out + err)
    return ended


def assert_one_complete_display_set_per_case(emulator: RunningEmulator, cases: int) -> None:
    outcome = server_outcome(emulator, {f"patient{n}" for n in range(1, cases + 1)})
    assert outcome["duplicates"] == outcome["missing"] == outcome["unexpected"] == 0, outcome


def ledger_rows(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of the shared ledger; none while the first worker has not created its tables yet."""
    with psycopg.connect(dsn) as db:
        try:
            return db.execute(sql, params).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):  # still migrating
            return []


@pytest.fixture
def dsn(pg_database: str) -> str:
    return pg_database


def test_four_workers_do_every_case_once(tmp_path: Path, threaded_emulator: RunningEmulator, dsn: str) -> None:
    make_tutorial_tree(tmp_path / "cases", 24)
    job_file = write_job(tmp_path, threaded_emulator, engine=LEASE)
    workers = {f"w{n}": start_worker(job_file, dsn, f"w{n}", threaded_emulator) for n in range(1, 5)}
    for name, (code, output) in finish(workers, dsn).items():
        assert code == 0, f"{name}: {output}"

    assert_one_complete_display_set_per_case(threaded_emulator, 24)
    done_events = Counter(case for (case,) in ledger_rows(dsn, "SELECT case_id FROM events WHERE kind = 'case.done'"))
    assert ledger_rows(dsn, "SELECT count(*) FROM cases") == [(24,)], "four planners at once recorded one plan"
    assert set(ledger_rows(dsn, "SELECT DISTINCT state FROM cases")) == {("done",)}
    assert all(n == 1 for n in done_events.values()), f"a case was done twice: {done_events}"
    assert ledger_rows(dsn, "SELECT count(*) FROM cases WHERE lease_owner IS NOT NULL") == [(0,)]


def test_a_worker_killed_mid_part_leaves_its_cases_to_the_others(
    tmp_path: Path, threaded_emulator: RunningEmulator, dsn: str
) -> None:
    cases = tmp_path / "cases"
    for n in range(1, 13):  # CTs of three 5 MiB parts, so a kill falls between the parts of one file
        make_mha(cases / f"patient{n}" / "ct.mha", (48, 256, 512), seed=n)
        make_mask(cases / f"patient{n}" / "seg.mha", (4, 8, 8), seed=n + 1000)
    job_file = write_job(tmp_path, threaded_emulator, engine=LEASE + 'part_size = "5 MiB"\nfiles_in_flight = 2\n')
    workers = {f"w{n}": start_worker(job_file, dsn, f"w{n}", threaded_emulator) for n in range(1, 5)}

    deadline = time.monotonic() + RUN_BOUND_SECONDS
    # Kill the first worker S3 holds a part of an unfinished file for: its upload is half sent.
    while not (
        half_sent := ledger_rows(
            dsn,
            (
                "SELECT cases.lease_owner FROM parts JOIN uploads ON uploads.id = parts.upload_id JOIN files ON "
                "files.id = uploads.file_id JOIN items ON items.id = files.item_id JOIN cases ON cases.id = items.case_id "
                "WHERE cases.lease_owner IS NOT NULL AND uploads.state NOT IN ('completed', 'consumed') LIMIT 1"
            ),
        )
    ):
        assert any(worker.poll() is None for worker in workers.values()), "every worker ended before a kill"
        assert time.monotonic() < deadline, "no worker ever had a half-sent upload"
        time.sleep(0.02)
    victim = half_sent[0][0]
    workers[victim].send_signal(signal.SIGKILL)
    orphaned = {
        case
        for (case,) in ledger_rows(
            dsn, "SELECT id FROM cases WHERE lease_owner = %s AND state IN ('planned', 'running')", (victim,)
        )
    }

    ended = finish(workers, dsn)
    assert ended[victim][0] == -signal.SIGKILL
    for name in set(workers) - {victim}:
        assert ended[name][0] == 0, f"{name}: {ended[name][1]}"
    assert_one_complete_display_set_per_case(threaded_emulator, 12)
    stored_twice = {key: n for key, n in threaded_emulator.context.counters.part_puts.items() if n > 1}
    assert not stored_twice, f"parts S3 already held were sent again: {stored_twice}"
    taken_over = {case for (case,) in ledger_rows(dsn, "SELECT case_id FROM events WHERE kind = 'case_taken_over'")}
    assert orphaned and orphaned <= taken_over, "the killed worker's cases were not taken over"


def test_the_live_upload_ceiling_holds_for_four_workers_together(
    tmp_path: Path, threaded_emulator: RunningEmulator, dsn: str
) -> None:
    make_tutorial_tree(tmp_path / "cases", 30)
    job_file = write_job(tmp_path, threaded_emulator, engine=LEASE + "live_upload_ceiling = 10\nfiles_in_flight = 8\n")
    workers = {f"w{n}": start_worker(job_file, dsn, f"w{n}", threaded_emulator) for n in range(1, 5)}
    for name, (code, output) in finish(workers, dsn).items():
        assert code == 0, f"{name}: {output}"
    assert_one_complete_display_set_per_case(threaded_emulator, 30)
    peak = max(threaded_emulator.context.counters.peak_uploads_per_user.values())
    assert 1 < peak <= 10, f"the server held {peak} uploads of the account at once"

"""Soak (``pytest -m soak -s``): three ``gcbulk run`` workers on one PostgreSQL ledger, one of them killed with SIGKILL
at a random moment and started again (under a new worker id, as a restarted machine would be) again and again, while
the case tree grows. Whatever the moments, the server ends with exactly one complete display set per case, no orphan
upload and no part stored twice; the figures are printed.

Seeded (``GCBULK_SOAK_SEED``); ``GCBULK_SOAK_WORKER_KILLS`` kills (default 20).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from gcbulk.emulator.server import RunningEmulator
from tests.engine.conftest import write_job
from tests.engine.test_several_workers import ledger_rows, start_worker
from tests.soak.test_random_kills import _add_cases, server_outcome

pytestmark = pytest.mark.soak

KILLS = int(os.environ.get("GCBULK_SOAK_WORKER_KILLS", "20"))
SEED = int(os.environ.get("GCBULK_SOAK_SEED", "20261129"))
RUN_BOUND_SECONDS = 300


def test_random_kills_of_one_worker_among_three(
    tmp_path: Path, threaded_emulator: RunningEmulator, pg_database: str
) -> None:
    rng = random.Random(SEED)
    dsn = pg_database
    cases = tmp_path / "cases"
    _add_cases(cases, 1, 20, rng)
    next_case = 21
    job_file = write_job(tmp_path, threaded_emulator, engine='part_size = "5 MiB"\nlease_seconds = 3\n')
    generation = Counter[str]()

    def start(slot: str):
        generation[slot] += 1
        return start_worker(job_file, dsn, f"{slot}-{generation[slot]}", threaded_emulator)

    workers = {slot: start(slot) for slot in ("a", "b", "c")}
    kills = 0
    started = time.monotonic()
    while kills < KILLS:
        time.sleep(rng.uniform(0.2, 3.0))
        slot = rng.choice(sorted(workers))
        if workers[slot].poll() is None:
            workers[slot].send_signal(signal.SIGKILL)
            kills += 1
        workers[slot].communicate(timeout=RUN_BOUND_SECONDS)
        if rng.random() < 0.5:
            _add_cases(cases, next_case, 2, rng)  # the migration grows while its workers die
            next_case += 2
        for other in sorted(workers):  # a worker that ran out of work ended: the job may have grown since
            if workers[other].poll() is not None:
                workers[other].communicate(timeout=RUN_BOUND_SECONDS)
                workers[other] = start(other)
    for slot, worker in workers.items():
        out, err = worker.communicate(timeout=RUN_BOUND_SECONDS)
        assert worker.returncode == 0, f"{slot}: {out}{err}"
    final = start("final")
    out, err = final.communicate(timeout=RUN_BOUND_SECONDS)
    assert final.returncode == 0, err

    outcome = server_outcome(threaded_emulator, {f"patient{n}" for n in range(1, next_case)})
    stored_twice = sum(1 for n in threaded_emulator.context.counters.part_puts.values() if n > 1)
    taken_over = len(ledger_rows(dsn, "SELECT id FROM events WHERE kind = 'case_taken_over'"))
    figures = {
        "kills": kills,
        **outcome,
        "parts_stored_twice": stored_twice,
        "cases_taken_over": taken_over,
        "seconds": round(time.monotonic() - started, 1),
        "seed": SEED,
    }
    print("worker soak figures:", json.dumps(figures))
    assert outcome["duplicates"] == outcome["missing"] == outcome["orphan_uploads"] == outcome["unexpected"] == 0, (
        figures
    )
    assert stored_twice == 0, figures

"""Soak (``pytest -m soak -s``): ``gcbulk run`` killed with SIGKILL at random moments, at least 30 times, while the
case tree grows, then run to the end. Whatever the moments, the server ends with exactly one complete display set per
case, no orphan upload, and the figures (kills, duplicates, missing, orphans, bytes re-sent) are printed.

Not in the default suite: it takes a few minutes. The kills are random (seeded, so a failure replays with the same
``GCBULK_SOAK_SEED``), not the named crash points of ``tests/engine/test_crash_resume.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator
from tests.engine.conftest import start_gcbulk, write_job
from tests.imaging import make_mask, make_mha

KILLS = int(os.environ.get("GCBULK_SOAK_KILLS", "30"))
SEED = int(os.environ.get("GCBULK_SOAK_SEED", "20261128"))
SOCKETS = {"ct-image", "airway-segmentation"}
RUN_BOUND_SECONDS = 300  # one run that does not end by then has hung


# Harsh enough to matter: imports take a while, and a few S3 PUTs and API calls fail as on a busy day.
pytestmark = [
    pytest.mark.soak,
    pytest.mark.emulator(
        import_delay_seconds=0.2,
        fault_seed=SEED,
        fault_rules=(
            FaultRule(match="PUT s3", probability=0.03, status=503),
            FaultRule(match="* api", probability=0.02, status=502, phase="after"),
        ),
    ),
]


def _add_cases(cases: Path, first: int, count: int, rng: random.Random) -> None:
    for n in range(first, first + count):
        folder = cases / f"patient{n}"
        folder.mkdir(parents=True, exist_ok=True)
        # Some CTs span two or three 5 MiB parts, so kills fall between the parts of one file too.
        shape = rng.choice([(24, 256, 512), (48, 256, 512)]) if rng.random() < 0.3 else (4, 32, 32)
        make_mha(folder / "ct.mha", shape, seed=n)
        make_mask(folder / "seg.mha", (4, 8, 8), seed=n + 1000)


def test_random_kills_leave_no_duplicate_no_gap_and_no_orphan(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    rng = random.Random(SEED)
    cases = tmp_path / "cases"
    cases.mkdir()
    _add_cases(cases, 1, 20, rng)
    next_case = 21
    job_file = write_job(tmp_path, threaded_emulator, engine='part_size = "5 MiB"\n')
    kills = finished_early = 0
    killed_after: Counter[str] = Counter()  # the last event each killed run wrote: where the kills fell
    started = time.monotonic()
    while kills < KILLS:
        events_before = _event_lines(tmp_path / "job.events.jsonl")
        run = start_gcbulk(threaded_emulator, "run", str(job_file))
        if rng.random() < 0.15:  # now and then while it starts (Python importing, the plan, the first reads) …
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # … mostly at a random moment of its work, once it has written its first event
            _wait_for_new_event(tmp_path / "job.events.jsonl", events_before, run)
            time.sleep(rng.uniform(0.0, 2.5))
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            kills += 1
            killed_after[_last_event(tmp_path / "job.events.jsonl", events_before)] += 1
        else:
            finished_early += 1
        run.communicate(timeout=RUN_BOUND_SECONDS)
        if rng.random() < 0.5 or run.returncode >= 0:
            _add_cases(cases, next_case, 2, rng)  # the migration grows while it is being killed
            next_case += 2
    final = start_gcbulk(threaded_emulator, "run", str(job_file))
    out, err = final.communicate(timeout=RUN_BOUND_SECONDS)
    assert final.returncode == 0, err
    check = start_gcbulk(threaded_emulator, "verify", str(job_file))
    out, err = check.communicate(timeout=RUN_BOUND_SECONDS)
    assert check.returncode == 0, out + err

    outcome = server_outcome(threaded_emulator, {f"patient{n}" for n in range(1, next_case)})
    sent, needed = _bytes_sent_and_needed(tmp_path / "job.ledger.sqlite", threaded_emulator)
    # The ledger must agree with the server: a case the server holds whole is not "failed" here (§10's complaint).
    with closing(sqlite3.connect(tmp_path / "job.ledger.sqlite")) as ledger:
        not_done = dict(ledger.execute("SELECT title, state FROM cases WHERE state <> 'done'").fetchall())
    figures = {
        "kills": kills,
        "runs_that_finished_before_their_kill": finished_early,
        **outcome,
        "cases_not_done_in_ledger": not_done,
        "bytes_needed": needed,
        "bytes_put": sent,
        "bytes_resent_percent": round(100 * (sent - needed) / needed, 2),
        "seconds": round(time.monotonic() - started, 1),
        "seed": SEED,
        "killed_after_event": dict(killed_after.most_common()),
    }
    print("soak figures:", json.dumps(figures))
    assert kills >= KILLS
    assert outcome["duplicates"] == outcome["missing"] == outcome["orphan_uploads"] == outcome["unexpected"] == 0, (
        figures
    )
    assert not_done == {}, figures


def server_outcome(emulator: RunningEmulator, expected: set[str]) -> dict[str, int]:
    """What the server ended with: display sets made twice, cases missing or incomplete, empty uploads left
    (orphans), display sets for no case of the tree."""
    store = emulator.context.store
    titles = Counter(ds.title for ds in store.display_sets.values())
    return {
        "cases": len(expected),
        "duplicates": sum(n - 1 for n in titles.values()),
        "missing": sum(1 for title in expected if title not in titles or not _complete(store, title)),
        "orphan_uploads": sum(upload.status == "Initialized" for upload in store.uploads.values()),
        "unexpected": len(set(titles) - expected),
    }


def _wait_for_new_event(events: Path, before: list[str], run: subprocess.Popen, bound: float = 60.0) -> None:
    deadline = time.monotonic() + bound
    while len(_event_lines(events)) <= len(before) and run.poll() is None:
        assert time.monotonic() < deadline, f"gcbulk run wrote no event within {bound} s"
        time.sleep(0.02)


def _event_lines(events: Path) -> list[str]:
    try:
        return events.read_text().splitlines()
    except FileNotFoundError:
        return []


def _last_event(events: Path, before: list[str]) -> str:
    """The last event the killed run wrote ("(starting)": killed before its first, e.g. while Python imported)."""
    for line in reversed(_event_lines(events)[len(before) :]):
        try:
            return json.loads(line).get("event", "?")
        except ValueError:
            continue  # the line the kill cut in half
    return "(starting)"


def _complete(store: object, title: str) -> bool:
    display_set = next(ds for ds in store.display_sets.values() if ds.title == title)  # type: ignore[attr-defined]
    return set(display_set.values) == SOCKETS and all(
        value.image_pk in store.images for value in display_set.values.values()
    )  # type: ignore[attr-defined]


def _bytes_sent_and_needed(ledger: Path, emulator: RunningEmulator) -> tuple[int, int]:
    """Bytes the emulator's S3 took in part PUTs (every attempt that reached its body, sized from the ledger's record
    of each upload) against the bytes of the files."""
    with closing(sqlite3.connect(ledger)) as db:
        needed = db.execute("SELECT coalesce(sum(size), 0) FROM files WHERE present = 1").fetchone()[0]
        shapes = {
            pk: (size, part, count)
            for pk, size, part, count in db.execute(
                "SELECT pk, file_size, part_size, part_count FROM uploads WHERE pk IS NOT NULL"
            )
        }
    sent = 0
    for (upload_pk, number), attempts in emulator.context.counters.part_put_attempts.items():
        size, part, count = shapes[upload_pk]
        sent += attempts * (size - part * (count - 1) if number == count else part)
    return sent, needed

"""The checksum a plan records for each file it will upload: the multipart checksum of its bytes at the part size its
upload will use (the upload proves with it that S3 stored the bytes planned), read once per new or changed file — a
file of 1 MiB or more on the reader threads, ahead of the recorder — and never for a file the ledger already holds
unchanged."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gcbulk.engine.jobfile import JobConfig, load_job
from gcbulk.engine.plan.parts import ChecksumStopped, MiB, adjust_part_size, multipart_checksum
from gcbulk.engine.service import plan_checksums
from gcbulk.engine.service.plan_recording import PlanReport, plan_into_ledger
from gcbulk.state.ledger import Ledger
from gcbulk.state.replan import PlanRecorder
from tests.planner.conftest import put, write_job

PART = 5 * MiB
# More cases than one read-ahead window (READ_AHEAD_CASES, 64), so files are hashed ahead across window boundaries.
CASES = 70
BIG_FILES = {"case00/big.bin": 11 * MiB, "case66/big.bin": 2 * MiB}  # in the first window and in the second


class HashesRead:
    """Each file whose content a plan reads for its checksum, as ``multipart_checksum`` is called (on any thread)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        self.thread_of: dict[str, str] = {}
        self.unreadable: set[str] = set()
        self._lock = threading.Lock()
        monkeypatch.setattr(plan_checksums, "multipart_checksum", self._read)

    def _read(self, path: Path, part_size: int, stop: threading.Event | None = None) -> str:
        relative = path.relative_to(path.parents[1]).as_posix()
        with self._lock:
            self.paths.append(relative)
            self.thread_of[relative] = threading.current_thread().name
        if relative in self.unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return multipart_checksum(path, part_size, stop)

    def take(self) -> list[str]:
        taken, self.paths = sorted(self.paths), []
        return taken


@pytest.fixture
def job(job_dir: Path) -> JobConfig:
    """70 cases of a 100-byte ``scan.bin``; two also have a ``big.bin`` (11 MiB: three 5 MiB parts; 2 MiB)."""
    for number in range(CASES):
        put(job_dir / "cases" / f"case{number:02d}" / "scan.bin", 100 + number)
    for path, size in BIG_FILES.items():
        put(job_dir / "cases" / path, size)
    rules = '[[rules]]\nglob = "scan.bin"\nsocket = "scan"\n\n[[rules]]\nglob = "big.bin"\nsocket = "big"\n'
    return load_job(write_job(job_dir, rules=rules, engine=f"part_size = {PART}"))


@pytest.fixture
def ledger(job: JobConfig, job_dir: Path) -> Iterator[Ledger]:
    with Ledger.open(job_dir / "job.ledger.sqlite", job.binding) as opened:
        yield opened


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> HashesRead:
    return HashesRead(monkeypatch)


def plan(config: JobConfig, ledger: Ledger, *, dry_run: bool = False) -> PlanReport:
    return plan_into_ledger(config, ledger, catalogue=None, dry_run=dry_run)


def recorded(ledger: Ledger) -> dict[str, tuple[str | None, int | None]]:
    """Each present file's path → (checksum, checksum part size) as the ledger holds them."""
    rows = ledger.rows("SELECT path, checksum, checksum_part_size FROM files WHERE present = 1")
    return {row["path"]: (row["checksum"], row["checksum_part_size"]) for row in rows}


def expected(config: JobConfig, path: str) -> tuple[str, int]:
    file = config.case_root / path
    part_size = adjust_part_size(config.engine.part_size, file.stat().st_size)
    return multipart_checksum(file, part_size), part_size


def test_a_first_plan_records_each_files_checksum_at_its_upload_part_size_reading_each_once(
    job: JobConfig, ledger: Ledger, hashes: HashesRead
) -> None:
    plan(job, ledger)
    files = recorded(ledger)
    assert len(files) == CASES + len(BIG_FILES)
    assert files == {path: expected(job, path) for path in files}
    big_checksum, big_part_size = files["case00/big.bin"]
    assert big_part_size == PART and big_checksum is not None and big_checksum.endswith("-3")
    assert hashes.take() == sorted(files)
    # The big files are hashed on the reader threads, while the thread recording the plan records the cases before.
    assert all(hashes.thread_of[path].startswith("gcbulk-content") for path in BIG_FILES)


def test_a_replan_of_an_unchanged_tree_reads_no_file_for_its_checksum(
    job: JobConfig, ledger: Ledger, hashes: HashesRead
) -> None:
    plan(job, ledger)
    before = recorded(ledger)
    hashes.take()
    again = plan(job, ledger)
    assert again.diff.new_cases == 0 and again.diff.requeued == []
    assert hashes.take() == []
    assert recorded(ledger) == before


def test_a_replan_reads_only_the_new_and_changed_files_and_records_their_new_checksums(
    job: JobConfig, ledger: Ledger, hashes: HashesRead
) -> None:
    plan(job, ledger)
    hashes.take()
    put(job.case_root / "case03" / "scan.bin", 4000)  # changed: a new size
    put(job.case_root / "case70" / "scan.bin", 300)  # a new case
    touched = job.case_root / "case05" / "scan.bin"  # the same bytes, a new mtime
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    report = plan(job, ledger)
    assert (report.diff.new_cases, report.diff.requeued) == (1, ["case03"])
    # The touched file is read once, to find its bytes unchanged; the others once each for their new checksum.
    assert hashes.take() == ["case03/scan.bin", "case05/scan.bin", "case70/scan.bin"]
    files = recorded(ledger)
    assert {path: files[path] for path in ("case03/scan.bin", "case70/scan.bin")} == {
        "case03/scan.bin": expected(job, "case03/scan.bin"),
        "case70/scan.bin": expected(job, "case70/scan.bin"),
    }


def test_a_file_that_cannot_be_read_for_its_checksum_is_planned_without_one(
    job: JobConfig, ledger: Ledger, hashes: HashesRead
) -> None:
    # Whether it was read on a reader thread (a big file) or by the recorder, the file is planned, and its upload's
    # own read says why it cannot be sent.
    hashes.unreadable |= {"case00/big.bin", "case01/scan.bin"}
    report = plan(job, ledger)
    assert report.diff.files_to_upload == CASES + len(BIG_FILES)
    files = recorded(ledger)
    assert files["case00/big.bin"] == files["case01/scan.bin"] == (None, None)
    assert files["case02/scan.bin"] == expected(job, "case02/scan.bin")
    assert files["case66/big.bin"] == expected(job, "case66/big.bin")


def test_a_dry_run_reads_no_file_for_a_checksum(job: JobConfig, ledger: Ledger, hashes: HashesRead) -> None:
    # Everything a dry run records is rolled back: its checksums would be read for nothing.
    dry = plan(job, ledger, dry_run=True)
    assert dry.diff.files_to_upload == CASES + len(BIG_FILES)
    assert hashes.take() == [] and recorded(ledger) == {}


def test_an_interrupted_plan_stops_reading_the_files_it_was_hashing(
    job: JobConfig, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A thread cannot be interrupted, and the plan's end waits for the hashes under way: they must stop by themselves,
    # or Ctrl-C during a first plan would wait for a big file to be read to its end.
    under_way = threading.Event()
    stopped: list[str] = []

    def hash_once_interrupted(path: Path, part_size: int, stop: threading.Event | None = None) -> str:
        assert stop is not None
        under_way.set()
        stop.wait(timeout=60)  # the plan is interrupted while this file is being read
        try:
            return multipart_checksum(path, part_size, stop)
        except ChecksumStopped:
            stopped.append(path.relative_to(job.case_root).as_posix())
            raise

    def interrupted(recorder: PlanRecorder, case: object) -> None:
        under_way.wait(timeout=60)
        raise KeyboardInterrupt

    monkeypatch.setattr(plan_checksums, "multipart_checksum", hash_once_interrupted)
    monkeypatch.setattr(PlanRecorder, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plan(job, ledger)
    assert stopped and set(stopped) <= set(BIG_FILES)
    assert ledger.plan_state == "planning"

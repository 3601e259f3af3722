"""The migration report at scale: size and build time of ``gcbulk report --html`` for 100 000 cases.

    python benchmarks/report_scale.py [--cases 100000] [--work-dir DIR] [--keep]

Makes a synthetic job through the ledger's own API — a plan of ``--cases`` cases (two files each; a few blocked by
findings), then each case sent the way the engine records it (upload created and initialized, parts sent, display
set created, values attached, imported, case done), on a clock that moves through three days: a first run killed at
40 %, a second stopped by SIGTERM at 75 %, a third that finishes, with some cases failed for a handful of reasons,
the upload quota exhausted for an hour, bursts of 429s and a comparison with the server at the end. The event file
gets the lines a run writes (about twenty per case), so its scan is measured too.

Then ``gcbulk report JOB --html`` runs as a child process and the script prints the page's size, the wall time, and
the child's peak RSS. The same synthetic job with ``--cases 2000`` is what ``docs/report.png`` shows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's benchmarks package

from benchmarks.harness import child_environment  # noqa: E402
from gcbulk.engine.plan.findings import Finding  # noqa: E402
from gcbulk.engine.plan.planner import PlannedCase, PlannedFile, PlannedItem  # noqa: E402
from gcbulk.state.ledger import JobBinding, Ledger  # noqa: E402
from gcbulk.state.replan import planning  # noqa: E402

MIB = 1024**2
START = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
FAILURES = (
    "display set {pk}: the server's import of ct-image failed: 'Could not read image: unsupported pixel type'",
    "upload of 1-ct.mha: presigned URL for part 3 expired after 3 retries (HTTP 403)",
    "display set {pk}: import did not finish within 3600 s (the server's import queue is slow)",
    "ct-image: the server refused the value: 'Image dimensions do not match the segmentation'",
)


class Clock:
    """The ledger's clock: set by the simulation, read by every transition."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def planned(n: int, rng: random.Random) -> PlannedCase:
    title = f"patient{n:06d}"
    ct = PlannedFile(path=f"{title}/1-ct.mha", name="1-ct.mha", size=rng.randint(8, 24) * MIB, mtime_ns=1)
    seg = PlannedFile(path=f"{title}/2-airway.mha", name="2-airway.mha", size=rng.randint(200, 900) * 1024, mtime_ns=1)
    findings: tuple[Finding, ...] = ()
    if n % 331 == 7:
        findings = (
            Finding(
                code="geometry-mismatch",
                severity="blocking",
                path=title,
                message="2-airway.mha has 32×64×64 voxels, 1-ct.mha 33×64×64: Grand Challenge would refuse the pair",
                fix="export the segmentation on the CT's grid",
                case=title,
            ),
        )
    return PlannedCase(
        title=title,
        folder=title,
        items=(PlannedItem(socket_slug="ct-image", files=(ct,)), PlannedItem(socket_slug="airway", files=(seg,))),
        findings=findings,
    )


def _line(at: datetime, event: str, **fields: object) -> str:
    record = {"at": at.isoformat().replace("+00:00", "Z"), "event": event, **fields}
    return json.dumps(record, separators=(",", ":")) + "\n"


def synthesize(ledger_path: Path, events_path: Path, job_file: Path, cases: int, seed: int = 28) -> None:
    rng = random.Random(seed)
    clock = Clock()
    binding = JobBinding(
        reader_study="lung-airways-2026",
        base_url="https://grand-challenge.org/api/v1/",
        case_root=str(job_file.parent / "cases"),
    )
    events = events_path.open("w", encoding="utf-8")
    with Ledger.open(ledger_path, binding, job_file=job_file, clock=clock) as ledger:
        ledger.db.execute("PRAGMA synchronous=OFF")  # a benchmark's setup, not a migration: no fsync per step
        with planning(ledger, rules={}, job_file=job_file) as plan:
            for n in range(1, cases + 1):
                plan.add(planned(n, rng))
            plan.finish()
        runs = [("vm-a-4121", 0.0, 0.40, "killed"), ("vm-a-5530", 0.40, 0.75, "SIGTERM"), ("vm-b-880", 0.75, 1.0, "")]
        todo = [row[0] for row in ledger.db.conn.execute("SELECT id FROM cases WHERE state = 'planned' ORDER BY id")]
        step = timedelta(days=3) / len(todo)
        for worker, low, high, ending in runs:
            clock.now = START + step * int(low * len(todo)) + timedelta(minutes=2)
            ledger.register_worker(worker, host=worker.rsplit("-", 1)[0], pid=int(worker.rsplit("-", 1)[1]))
            events.write(_line(clock.now, "worker_started", worker=worker, lease_seconds=30))
            chunk = todo[int(low * len(todo)) : int(high * len(todo))]
            for batch in _batches(chunk, 500):
                with ledger.db.atomic():
                    for case_id in batch:
                        _send_case(ledger, clock, events, rng, case_id, step)
                ledger.heartbeat(worker, lease_seconds=30, running=())
            if ending == "SIGTERM":
                events.write(_line(clock.now, "stop_requested", signal="SIGTERM", drain_seconds=30))
                ledger.worker_stopped(worker)
                events.write(_line(clock.now, "run_finished", done=len(chunk), failed=0, interrupted=True))
            elif not ending:
                ledger.worker_stopped(worker)
                events.write(_line(clock.now, "run_finished", done=len(chunk), failed=0, interrupted=False))
        for offset in range(0, 60, 2):  # the upload quota: an hour of waits on the second day
            events.write(
                _line(START + timedelta(days=1, hours=14, minutes=offset), "server_wait", category="quota_exhausted")
            )
        for burst in range(12):  # bursts of 429s from a proxy in front of the server
            moment = START + timedelta(hours=5 + 5 * burst)
            for k in range(rng.randint(5, 40)):
                events.write(_line(moment + timedelta(seconds=k), "server_wait", category="throttled"))
        done = ledger.db.conn.execute("SELECT count(*) FROM display_sets WHERE pk IS NOT NULL").fetchone()[0]
        events.write(_line(clock.now, "reconciled", checked=done, display_sets_gone=0, values_gone=0))
    events.close()


def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _send_case(
    ledger: Ledger,
    clock: Clock,
    events: TextIO,
    rng: random.Random,
    case_id: int,
    step: timedelta,
) -> None:
    start = clock.now
    title = f"patient{case_id:06d}"
    clock.now = start
    ledger.case_started(case_id)
    events.write(_line(clock.now, "case_started", case=title, key=[case_id]))
    work = ledger.case_work(case_id)
    pk = f"ds-{case_id:08d}"
    for item in work.items:
        ledger.item_uploading(item.id)
        for file in item.files:
            upload = ledger.upload_creating(file.id, part_size=16 * MIB)
            ledger.upload_initialized(upload, pk=f"up-{upload}", s3_upload_id=f"s3-{upload}")
            parts = max(1, -(-file.size // (16 * MIB)))
            for number in range(1, parts + 1):
                clock.now += timedelta(seconds=rng.uniform(0.5, 4.0))
                size = min(16 * MIB, file.size - (number - 1) * 16 * MIB)
                ledger.part_sent(upload, number, size=size, etag=f'"{upload:x}{number:x}"')
                events.write(_line(clock.now, "part_sent", case=title, key=[upload, number], size=size))
            ledger.upload_completed(upload)
            for event in ("upload_creating", "upload_initialized", "upload_completed"):
                events.write(_line(clock.now, event, case=title, key=[upload]))
        ledger.item_uploaded(item.id)
        events.write(_line(clock.now, "item_uploaded", case=title, key=[item.id]))
    ledger.display_set_creating(case_id)
    ledger.display_set_created(case_id, pk)
    ledger.display_set_values_attached(case_id)
    ledger.display_set_importing(case_id)
    for event in ("display_set_creating", "display_set_created", "display_set_values_attached"):
        events.write(_line(clock.now, event, case=title, key=[case_id]))
    clock.now += timedelta(seconds=rng.lognormvariate(3.5, 0.6))  # the server's import
    if case_id % 97 == 3:
        reason = FAILURES[rng.randrange(len(FAILURES))].format(pk=pk)
        ledger.case_failed(case_id, reason)
        events.write(_line(clock.now, "case_failed", case=title, key=[case_id], reason=reason))
    else:
        ledger.display_set_done(case_id)
        ledger.case_done(case_id)
        events.write(_line(clock.now, "case_done", case=title, key=[case_id]))
    clock.now = start + step


def live_refresh(ledger_path: Path, events_path: Path) -> None:
    """What one refresh of /status costs once its connection is open and the event file scanned: the ledger's
    aggregates and the page, in this process (the first request also opens the ledger and scans the whole file)."""
    from gcbulk.engine.service.report_events import EventScanner
    from gcbulk.engine.service.report_html import render_page
    from gcbulk.state.report_aggregates import ledger_picture

    with Ledger.open_readonly(ledger_path) as ledger:
        scanner = EventScanner(events_path)
        began = time.perf_counter()
        facts = scanner.scan()
        scanned = time.perf_counter() - began
        timings = []
        for _ in range(3):
            began = time.perf_counter()
            picture = ledger_picture(ledger)
            page = render_page(picture, scanner.scan(), redact=False, generated_at=datetime.now(UTC), version="bench")
            timings.append(time.perf_counter() - began)
    print(
        f"event file scanned in {scanned:.1f} s ({facts.lines_read:,} lines); a /status refresh after that: "
        f"{min(timings):.1f} s (best of 3), page {len(page.encode()) / 1024:.0f} KiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (the job, ledger, event file, page)")
    parser.add_argument("--out", type=Path, help="write the page here (default: WORK/report.html)")
    parser.add_argument(
        "--reuse", action="store_true", help="measure again on the job already in --work-dir (no new synthesis)"
    )
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gcbulk-report-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "cases").mkdir(exist_ok=True)
    job_file = work / "job.toml"
    job_file.write_text(
        'reader_study = "lung-airways-2026"\nbase_url = "https://grand-challenge.org/api/v1/"\ncase_root = "cases"\n\n'
        '[[rules]]\nglob = "*-ct.mha"\nsocket = "ct-image"\n\n[[rules]]\nglob = "*-airway.mha"\nsocket = "airway"\n'
    )
    ledger_path, events_path = work / "job.ledger.sqlite", work / "job.events.jsonl"
    if not (args.reuse and ledger_path.exists()):
        for stale in (ledger_path, events_path):
            stale.unlink(missing_ok=True)
        began = time.perf_counter()
        synthesize(ledger_path, events_path, job_file, args.cases)
        print(f"synthetic job: {args.cases:,} cases in {time.perf_counter() - began:.0f} s")
    print(f"ledger {ledger_path.stat().st_size / MIB:.0f} MiB, event file {events_path.stat().st_size / MIB:.0f} MiB")
    live_refresh(ledger_path, events_path)
    out = args.out or work / "report.html"
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "gcbulk.engine", "report", str(job_file), "--html", str(out)],
        env=child_environment(GRAND_CHALLENGE_AUTHORIZATION=""),  # with bytecode caches, as installed
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"gcbulk report exited {os.waitstatus_to_exitcode(status)}", file=sys.stderr)
        return 1
    print(
        f"report: {out.stat().st_size / 1024:.0f} KiB, built in {wall:.1f} s (wall, whole process), "
        f"peak RSS {usage.ru_maxrss / 1024:.0f} MiB, for {args.cases:,} cases"
    )
    if not args.keep and args.work_dir is None:
        for path in (ledger_path, events_path):
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())

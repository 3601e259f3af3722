"""A job with a known history, recorded through the ledger's own API and written to a real event file: the input
of the migration-report tests (``gcbulk report --html``, ``/status``, the browser test).

Cases: patient1 and patient2 done (two parts each), patient3 failed with a reason naming its display set, patient4
blocked by a finding, patient5 still planned. Two runs: the first killed after patient1 (no goodbye), the second
stopped after patient3. The event file holds two 429 waits and one quota wait, the second run's stop request, and a
clean comparison with the server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gcbulk.engine.jobfile import load_job
from gcbulk.engine.plan.findings import Finding
from gcbulk.engine.plan.planner import PlannedCase, PlannedFile, PlannedItem
from gcbulk.state.ledger import Ledger, default_ledger_path
from gcbulk.state.replan import planning
from tests.container.conftest import write_job_file

START = datetime(2025, 11, 20, 10, 0, 0, tzinfo=UTC)
FAILURE = "display set ds-3: the server's import of ct-image failed: 'unsupported pixel type'"
BLOCKING = "2-seg.mha has 32×64×64 voxels and 1-ct.mha 33×64×64: Grand Challenge would refuse the pair"


class Clock:
    """Each reading is ten seconds after the last: the history's timings are exact."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=10)
        return self.now


@dataclass(frozen=True)
class History:
    job_file: Path
    ledger: Path
    events: Path


def planned(title: str, *, blocked: bool = False, size: int = 3000) -> PlannedCase:
    files = (PlannedFile(path=f"{title}/1-ct.mha", name="1-ct.mha", size=size, mtime_ns=1),)
    findings = ()
    if blocked:
        findings = (
            Finding(
                code="geometry-mismatch", severity="blocking", path=title, message=BLOCKING, fix="resample", case=title
            ),
        )
    return PlannedCase(
        title=title, folder=title, items=(PlannedItem(socket_slug="ct-image", files=files),), findings=findings
    )


def send(ledger: Ledger, case_id: int, *, parts: int = 2) -> None:
    """One case the way the engine records it, up to its display set imported."""
    ledger.case_started(case_id)
    work = ledger.case_work(case_id)
    for item in work.items:
        ledger.item_uploading(item.id)
        for file in item.files:
            size = file.size // parts
            upload = ledger.upload_creating(file.id, part_size=size)
            ledger.upload_initialized(upload, pk=f"up-{upload}", s3_upload_id=f"s3-{upload}")
            for number in range(1, parts + 1):
                ledger.part_sent(upload, number, size=size, etag=f'"e{upload}-{number}"')
            ledger.upload_completed(upload)
        ledger.item_uploaded(item.id)
    ledger.display_set_creating(case_id)
    ledger.display_set_created(case_id, f"ds-{case_id}")
    ledger.display_set_values_attached(case_id)
    ledger.display_set_importing(case_id)


def event_line(at: datetime, event: str, **fields: object) -> str:
    return json.dumps({"at": at.isoformat().replace("+00:00", "Z"), "event": event, **fields}) + "\n"


def write_history(directory: Path, *, titles: tuple[str, ...] = (), cut_short: bool = True) -> History:
    """The job described in the module docstring, in ``directory``. ``titles`` replace patient1… in order;
    ``cut_short``: the event file ends in a line a kill cut short."""
    job_file = write_job_file(directory)
    job = load_job(job_file)
    names = list(titles) + [f"patient{n}" for n in range(len(titles) + 1, 6)]
    clock = Clock()
    ledger_path = default_ledger_path(job.job_file)
    with Ledger.open(ledger_path, job.binding, job_file=job.job_file, clock=clock) as ledger:
        with planning(ledger, rules=job.rules_dict(), job_file=job.job_file) as plan:
            for n, title in enumerate(names, start=1):
                plan.add(planned(title, blocked=n == 4))
            plan.finish()
        ids = [ledger.case_id_by_title(title) for title in names]
        ledger.register_worker("host-101", host="host", pid=101)
        send(ledger, ids[0])
        ledger.display_set_done(ids[0])
        ledger.case_done(ids[0])
        ledger.heartbeat("host-101", lease_seconds=30, running=())
        killed_at = clock.now
        ledger.register_worker("host-202", host="host", pid=202)
        resumed_at = clock.now
        send(ledger, ids[1])
        ledger.display_set_done(ids[1])
        ledger.case_done(ids[1])
        send(ledger, ids[2], parts=1)
        ledger.case_failed(ids[2], FAILURE)
        ledger.worker_stopped("host-202")
        stopped_at = clock.now
    events = directory / "job.events.jsonl"
    events.write_text(
        event_line(START, "worker_started", worker="host-101")
        + event_line(START + timedelta(seconds=30), "server_wait", category="throttled")
        + event_line(START + timedelta(seconds=31), "server_wait", category="throttled")
        + event_line(killed_at - timedelta(seconds=5), "server_wait", category="quota_exhausted")
        + event_line(resumed_at, "worker_started", worker="host-202")
        + event_line(stopped_at - timedelta(seconds=1), "stop_requested", signal="SIGTERM", drain_seconds=30)
        + event_line(stopped_at, "run_finished", done=1, failed=1, interrupted=True)
        + event_line(stopped_at, "reconciled", checked=2, display_sets_gone=0, values_gone=0)
        + ('{"at": "2025-11-20T11:00:00Z", "event": "server_wa' if cut_short else "")  # a kill mid-write
    )
    return History(job_file=job_file, ledger=ledger_path, events=events)

"""R1-shaped work against any server URL (``compare_gcapi.py --base-url``): N tutorial cases (CT 2 MiB + airway mask
0.5 MiB) added by gcbulk and by gcapi, alternating, each client in its own process as on the emulator
(``benchmarks/harness.py``: wall and CPU time from interpreter start to exit), so the same table can be taken on a real
Grand Challenge deployment.

Requests per case are counted by the clients themselves — the server's counters are the emulator's alone: gcbulk's
``run_finished`` event carries the API requests its client had answered, and ``benchmarks/gcapi_clients.py`` prints
the requests it sent to the API. Every round uses new case titles (``<stamp>-<client>-<round>-patientNNNN``): a title
is unique within a study (docs/gc-api.md §3), and each client must create its own display sets.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.capacity_runs import SOCKETS, make_tutorial_cases
from benchmarks.harness import MIB, Timed, run_measured_with_output

TOKEN_FILE_MAX_BYTES = 4096  # a token is 64 characters; a larger file is not a token file
CLIENTS = ("gcbulk", "gcapi")


@dataclass(frozen=True)
class Server:
    base_url: str
    ca_file: Path | None
    token: str
    study: str


@dataclass(frozen=True)
class RemoteRun:
    client: str
    timed: Timed
    cases: int
    bytes: int
    api_requests: int

    @property
    def requests_per_case(self) -> float:
        return self.api_requests / self.cases

    @property
    def cpu_per_gib(self) -> float:
        return self.timed.cpu_seconds / (self.bytes / 1024**3)


def read_token(path: Path) -> str:
    """The API token from ``path`` (its first line), read bounded; raises ``SystemExit`` naming the file."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(TOKEN_FILE_MAX_BYTES + 1)
    except OSError as error:
        raise SystemExit(f"--token-file {path}: cannot read it ({error.strerror})") from None
    token = raw.decode(errors="replace").strip().splitlines()[0].strip() if raw.strip() else ""
    if len(raw) > TOKEN_FILE_MAX_BYTES or not token or any(c.isspace() for c in token):
        raise SystemExit(f"--token-file {path}: expected one line with the API token, nothing else")
    return token


def _copy_cases(template: list[tuple[str, list[Path]]], root: Path, prefix: str) -> list[tuple[str, list[Path]]]:
    """The template's case files under new case folders (hard links where the file system allows: no bytes copied)."""
    layout = []
    for title, files in template:
        folder = root / f"{prefix}-{title}"
        folder.mkdir(parents=True, exist_ok=True)
        copies = []
        for source in files:
            target = folder / source.name
            if not target.exists():
                try:
                    os.link(source, target)
                except OSError:
                    target.write_bytes(source.read_bytes())
            copies.append(target)
        layout.append((folder.name, copies))
    return layout


def _gcbulk(server: Server, layout: list[tuple[str, list[Path]]], directory: Path, engine: str) -> RemoteRun:
    rules = "".join(f'[[rules]]\nglob = "{glob}"\nsocket = "{slug}"\n\n' for glob, slug in SOCKETS)
    ca = f"ca_file = {json.dumps(str(server.ca_file))}\n" if server.ca_file else ""
    job = directory / "remote-job.toml"
    job.write_text(
        f"reader_study = {json.dumps(server.study)}\nbase_url = {json.dumps(server.base_url)}\n"
        f"case_root = {json.dumps(str(layout[0][1][0].parent.parent))}\n{ca}\n{rules}[engine]\n{engine}"
    )
    timed, _ = run_measured_with_output(
        "gcbulk run", ["-m", "gcbulk", "run", str(job), "--progress-interval", "30"], server.token
    )
    finished = [
        event
        for event in map(json.loads, (directory / "remote-job.events.jsonl").read_text().splitlines())
        if event.get("event") == "run_finished"
    ]
    return RemoteRun("gcbulk", timed, len(layout), _size(layout), int(finished[-1]["api_requests"]))


def _gcapi(server: Server, layout: list[tuple[str, list[Path]]], directory: Path) -> RemoteRun:
    layout_file = directory / "gcapi-layout.json"
    layout_file.write_text(
        json.dumps(
            {
                "base_url": server.base_url,
                "ca_file": str(server.ca_file) if server.ca_file else None,
                "study": server.study,
                "cases": [[title, [str(p) for p in files]] for title, files in layout],
            }
        )
    )
    timed, out = run_measured_with_output(
        "gcapi (tutorial)", ["-m", "benchmarks.gcapi_clients", "tutorial", str(layout_file)], server.token
    )
    counted = json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("{")))
    return RemoteRun("gcapi", timed, len(layout), _size(layout), int(counted["api_requests"]))


def _size(layout: list[tuple[str, list[Path]]]) -> int:
    return sum(path.stat().st_size for _, files in layout for path in files)


def run_remote(server: Server, cases: int, rounds: int, workdir: Path, engine: str) -> dict[str, list[RemoteRun]]:
    """``rounds`` rounds of each client on ``cases`` new tutorial cases, alternating (the first client of each round
    alternates too, so neither always runs on a server its rival has just loaded); printed as they go."""
    template = make_tutorial_cases(workdir / f"tutorial-{cases}", cases)
    stamp = time.strftime("%Y%m%d%H%M%S")
    mib = _size(template) / MIB
    print(
        f"R1 against {server.base_url} (study {server.study}): {cases} cases, {mib:.0f} MiB per client run", flush=True
    )
    runs: dict[str, list[RemoteRun]] = {client: [] for client in CLIENTS}
    for round_number in range(rounds):
        order = CLIENTS if round_number % 2 == 0 else tuple(reversed(CLIENTS))
        for client in order:
            directory = workdir / "remote" / f"{stamp}-{client}-{round_number}"
            layout = _copy_cases(template, directory / "cases", f"{stamp}-{client}-{round_number}")
            run = (
                _gcbulk(server, layout, directory, engine) if client == "gcbulk" else _gcapi(server, layout, directory)
            )
            runs[client].append(run)
            print(
                f"  round {round_number + 1} {client:7s} {run.timed.seconds:7.1f} s  {run.requests_per_case:5.1f} "
                f"req/case  cpu {run.cpu_per_gib:5.1f} s/GiB",
                flush=True,
            )
    return runs


def remote_table(runs: dict[str, list[RemoteRun]]) -> list[str]:
    """The same measures as the capacity rows (medians over the rounds): wall, requests per case, CPU per GiB."""
    lines = ["\nclient   wall (median)  requests/case  client CPU s/GiB"]
    for client, measured in runs.items():
        wall = statistics.median(r.timed.seconds for r in measured)
        requests = statistics.median(r.requests_per_case for r in measured)
        cpu = statistics.median(r.cpu_per_gib for r in measured)
        lines.append(f"{client:7s}  {wall:11.1f} s  {requests:13.1f}  {cpu:16.1f}")
    return lines

"""Several gcbulk workers on one job through a PostgreSQL ledger (issue 13): 1, 2 and 4 ``gcbulk run`` processes.

    python benchmarks/scale_out.py [--scale 1.0] [--workers 1,2,4] [--only W3,R1] [--workdir DIR]

* W3 (as ``compare_gcapi.py``): 200 cases × 10 files × 1 MiB, 50 ms of latency on every request, the emulator's
  default profile (it answers at once, so the client is the limit). Goal: 4 workers ≥ 3.5× one worker.
* R1 (as ``capacity_runs.py``): the tutorial's cases (CT 2 MiB + mask 0.5 MiB) imported for real, under the capacity
  profile (``--profile real``: two web workers, two import workers): the server is the limit, so more workers cannot
  go faster; they must not go slower either. Goal: no worse than one worker (within 10 %, the noise between runs
  of one setting measured on this machine).

Each row gets a fresh emulator process and a fresh database on one throwaway PostgreSQL server
(``tests/pg_server.py``); its workers are ``gcbulk run JOB --ledger DSN --worker-id wN``, started together. Measured:
wall seconds from the first start until the last worker exits, the cases the ledger calls done (``gcbulk status``),
the display sets on the server (they must equal the cases: a second display set for a case is a duplicate), the
most uploads the server saw the account hold at once (the emulator's ``peak_uploads_per_user``), and the CPU
seconds of every process of the row: the workers (``resource.getrusage`` of the waited-for children), the emulator
and the PostgreSQL server (each process tree's ``/proc/<pid>/stat``, read before and after). ``--scale`` shrinks the
case counts.

**The machine's bound.** The goals assume workers with cores (or hosts) of their own. Where the emulator, PostgreSQL
and every worker share this machine's cores, no row can finish faster than its total CPU seconds ÷ the cores
(``os.cpu_count()``): the table prints that lower bound on wall time for each row, and the best speed-up over one
worker this host could therefore show (one worker's wall ÷ the row's bound), beside the goal. Other load on the
machine (the load average before and after is printed) only raises the real bound.

**Of bound** is the row's bound ÷ its wall time: how close the workers came to what this host allows. 100 % means
the row finished as fast as its CPU work on these cores permits; the rest is time no core was busy for the row (the
workers waiting on latency, a lease, each other or PostgreSQL). Goal (issue 31): W3 ≥ 90 % for 1, 2 and 4 workers.
Other load on the machine lowers it too, which is why the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.capacity_runs import import_floor_seconds, make_tutorial_cases, write_tutorial_job  # noqa: E402
from benchmarks.compare_gcapi import GCBULK_ENGINE, WORKLOADS  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    REPO,
    Emulator,
    child_environment,
    cpu_seconds,
    emulator_process,
    make_cases,
    write_job,
)
from tests.pg_server import PgServer  # noqa: E402

GOAL_W3_SPEEDUP = 3.5  # 4 workers against 1
GOAL_R1_SLOWDOWN = 1.10  # n workers' wall time against 1 worker's, under the capacity profile
GOAL_OF_BOUND = 0.90  # W3: the machine's bound ÷ the wall time (issue 31)


@dataclass(frozen=True)
class Row:
    workload: str
    workers: int
    cases: int
    seconds: float
    cpu_seconds: float  # the workers'
    emulator_cpu_seconds: float
    postgres_cpu_seconds: float
    cases_done: int
    display_sets: int
    duplicates: int
    peak_uploads: int | None
    exit_codes: tuple[int, ...]

    @property
    def total_cpu_seconds(self) -> float:
        return self.cpu_seconds + self.emulator_cpu_seconds + self.postgres_cpu_seconds

    @property
    def machine_bound_seconds(self) -> float:
        """The shortest wall time this machine's cores allow for the row's CPU work (all processes share them)."""
        return self.total_cpu_seconds / (os.cpu_count() or 1)

    @property
    def of_bound(self) -> float:
        """The machine's bound ÷ the wall time: 1.0 when the row went as fast as this host's cores allow."""
        return self.machine_bound_seconds / self.seconds


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU seconds of ``root_pid`` and every process under it, including those that ended and were waited for
    (``cutime``/``cstime``: PostgreSQL's backends, reaped by the postmaster). 0.0 where /proc cannot tell."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, its CPU seconds and its waited-for children's)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": the name may hold spaces
        stats[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / _TICKS)
    tree, frontier = set(), {root_pid} & stats.keys()
    while frontier:
        tree |= frontier
        frontier = {pid for pid, (parent, _) in stats.items() if parent in frontier} - tree
    return sum(stats[pid][1] for pid in tree)


def postmaster_pid(pg: PgServer) -> int:
    return int((pg.root / "data" / "postmaster.pid").read_text().split()[0])


def start_workers(job: Path, dsn: str, emulator: Emulator, workers: int, logs: Path) -> list[subprocess.Popen]:
    """``workers`` processes of ``gcbulk run`` on one job and one ledger, each with its own id and log file."""
    env = child_environment(GRAND_CHALLENGE_AUTHORIZATION=emulator.token, GCBULK_METRICS_ADDRESS="off")
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for n in range(1, workers + 1):
        log = (logs / f"w{n}.log").open("w")
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gcbulk",
                    "run",
                    str(job),
                    "--ledger",
                    dsn,
                    "--worker-id",
                    f"w{n}",
                    "--progress-interval",
                    "30",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        )
        log.close()  # the child holds its own copy
    return processes


def wait_all(processes: list[subprocess.Popen], timeout: float) -> tuple[int, ...]:
    """The workers' exit codes; a worker still running at the deadline is killed and counts as exit -9 (a stall is
    a result: the row says so instead of the whole benchmark hanging)."""
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for process in processes:
            try:
                codes.append(process.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(-9)
        return tuple(codes)
    finally:
        for process in processes:  # only the workers this benchmark started
            if process.poll() is None:
                process.kill()
                process.wait()


def cases_done(job: Path, dsn: str) -> int:
    result = subprocess.run(
        [sys.executable, "-m", "gcbulk", "status", str(job), "--ledger", dsn, "--offline", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"gcbulk status failed ({result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout)["counts"]["case"].get("done", 0)


def display_set_titles(emulator: Emulator) -> Counter[str]:
    """Every display set's title, from the API as any client sees them (read after the timing)."""
    context = ssl.create_default_context(cafile=emulator.ca_file)
    titles: Counter[str] = Counter()
    url: str | None = f"{emulator.base_url}reader-studies/display-sets/?limit=1000"
    while url:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {emulator.token}"})
        with urllib.request.urlopen(request, context=context, timeout=120) as response:
            page = json.loads(response.read())
        titles.update(display_set["title_safe"] for display_set in page["results"])  # "title" is not read back
        url = page.get("next")
    return titles


def peak_uploads(emulator: Emulator) -> int | None:
    peaks = emulator.admin("GET", "counters").get("peak_uploads_per_user")
    return max(peaks.values(), default=0) if peaks is not None else None


def measure(
    name: str, workers: int, job: Path, emulator: Emulator, pg: PgServer, cases: int, logs: Path, timeout: float
) -> Row:
    dsn = pg.new_database()
    others_before = (tree_cpu_seconds(emulator.process.pid), tree_cpu_seconds(postmaster_pid(pg)))
    cpu_before = cpu_seconds(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    codes = wait_all(start_workers(job, dsn, emulator, workers, logs), timeout)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before  # the workers only: the emulator is not waited for yet
    emulator_cpu = tree_cpu_seconds(emulator.process.pid) - others_before[0]
    postgres_cpu = tree_cpu_seconds(postmaster_pid(pg)) - others_before[1]
    peak = peak_uploads(emulator)  # before the listing below adds requests of its own
    titles = display_set_titles(emulator)
    row = Row(
        name,
        workers,
        cases,
        seconds,
        cpu,
        emulator_cpu,
        postgres_cpu,
        cases_done(job, dsn),
        sum(titles.values()),
        sum(n - 1 for n in titles.values() if n > 1),
        peak,
        codes,
    )
    if any(codes):
        tails = "\n".join(
            f"--- w{n} (exit {code}):\n{(logs / f'w{n}.log').read_text()[-1500:]}"
            for n, code in enumerate(codes, 1)
            if code
        )
        print(f"  {name} × {workers}: a worker failed; logs in {logs}\n{tails}", flush=True)
    print(
        f"  {name} × {workers} worker(s): {seconds:7.1f} s, {row.cases_done}/{cases} done, {row.display_sets} "
        f"display sets ({row.duplicates} duplicates), peak uploads {peak}, CPU s: workers {cpu:.1f}, emulator "
        f"{emulator_cpu:.1f}, PostgreSQL {postgres_cpu:.1f}; exits {codes}",
        flush=True,
    )
    return row


def run_w3(scale: float, counts: list[int], workdir: Path, pg: PgServer, timeout: float) -> list[Row]:
    workload = next(w for w in WORKLOADS if w.name == "W3").scaled(scale)
    tree = workdir / f"W3-{workload.cases}"
    make_cases(tree / "cases", workload.cases, workload.files_per_case, workload.file_size)
    print(f"W3: {workload.describe()}, emulator default profile", flush=True)
    rows = []
    for workers in counts:
        with emulator_process(workdir / "emulator") as emulator:
            emulator.set_latency(workload.latency)
            job = write_job(tree, emulator, tree / "cases", workload.files_per_case, engine=GCBULK_ENGINE)
            rows.append(
                measure("W3", workers, job, emulator, pg, workload.cases, workdir / "logs" / f"W3-{workers}", timeout)
            )
    return rows


def run_r1(scale: float, counts: list[int], workdir: Path, pg: PgServer, timeout: float) -> list[Row]:
    cases = max(4, round(200 * scale))
    layout = make_tutorial_cases(workdir / f"tutorial-{cases}", cases)
    print(
        f"R1: {cases} cases × (CT 2 MiB + mask 0.5 MiB), real imports, --profile real (import floor "
        f"{import_floor_seconds(layout):.1f} s)",
        flush=True,
    )
    rows = []
    for workers in counts:
        with emulator_process(workdir / "emulator", profile="real", seed=None) as emulator:
            job = write_tutorial_job(workdir, emulator, layout[0][1][0].parent.parent, "")
            rows.append(measure("R1", workers, job, emulator, pg, cases, workdir / "logs" / f"R1-{workers}", timeout))
    return rows


def goal_of(row: Row, one: Row | None) -> tuple[str, str, bool]:
    """(speed-up against one worker, the goal, met) for the table."""
    complete = row.cases_done == row.cases == row.display_sets and row.duplicates == 0 and not any(row.exit_codes)
    if one is None or row.workers == 1:
        return "1.00×", "all done once", complete
    speedup = one.seconds / row.seconds
    if row.workload == "W3":
        goal, met = (f"≥ {GOAL_W3_SPEEDUP}×", speedup >= GOAL_W3_SPEEDUP) if row.workers == 4 else ("(shown)", True)
    else:
        goal, met = f"≥ {1 / GOAL_R1_SLOWDOWN:.2f}× (no worse)", row.seconds <= GOAL_R1_SLOWDOWN * one.seconds
    return f"{speedup:.2f}×", goal, met and complete


def host_best(row: Row, one: Row | None) -> str:
    """The best speed-up over one worker this machine could show for the row's CPU work (its cores are shared)."""
    return "" if one is None else f"{one.seconds / row.machine_bound_seconds:.2f}×"


def print_table(rows: list[Row]) -> bool:
    cores = os.cpu_count() or 1
    print(
        "\nworkload  workers  wall s  vs 1 worker  cases done  display sets (dup)  peak uploads  "
        "CPU s: workers + emulator + PostgreSQL = total  machine bound s  of bound  best on this host  goal"
        "                   result"
    )
    ok = True
    for row in rows:
        one = next((r for r in rows if r.workload == row.workload and r.workers == 1), None)
        speedup, goal, met = goal_of(row, one)
        ok &= met
        peak = "n/a" if row.peak_uploads is None else str(row.peak_uploads)
        cpu = (
            f"{row.cpu_seconds:7.1f} + {row.emulator_cpu_seconds:8.1f} + {row.postgres_cpu_seconds:10.1f} = "
            f"{row.total_cpu_seconds:5.1f}"
        )
        print(
            f"{row.workload:8s}  {row.workers:7d}  {row.seconds:6.1f}  {speedup:>11s}  {row.cases_done:>5d}/"
            f"{row.cases:<4d}  {row.display_sets:>12d} ({row.duplicates})  {peak:>12s}  {cpu:>44s}  "
            f"{row.machine_bound_seconds:15.1f}  {row.of_bound:>8.0%}  {host_best(row, one):>17s}  {goal:21s}  "
            f"{'met' if met else 'NOT met'}"
        )
    print(
        f"machine bound: the row's CPU seconds of every process ÷ {cores} cores, the shortest wall time this host "
        "allows when the emulator, PostgreSQL and the workers share it; best on this host: 1 worker's wall ÷ that "
        "bound, the most any worker count could show here; of bound: that bound ÷ the row's wall time (W3's goal "
        f"≥ {GOAL_OF_BOUND:.0%}). The speed-up goals assume workers with cores of their own."
    )
    return ok


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the case counts (e.g. 0.25 for a quick run)")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts (1 is the reference)")
    parser.add_argument("--only", default="W3,R1", help="comma-separated workloads: W3, R1")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gcbulk-bench-scale-out")
    parser.add_argument(
        "--row-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="workers still running after this long are killed and the row marked failed",
    )
    args = parser.parse_args()
    # A SIGTERM (timeout(1), Ctrl-C's cousin) unwinds through the finally blocks: workers, emulator and the
    # PostgreSQL server (a daemon of its own, which nothing else would stop) all end with the benchmark.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = sorted({int(n) for n in args.workers.split(",")})
    names = args.only.split(",")
    print(f"scale {args.scale}, workers {counts}; before: {load()}", flush=True)
    pg = PgServer.start()
    try:
        rows = (run_w3(args.scale, counts, args.workdir, pg, args.row_timeout) if "W3" in names else []) + (
            run_r1(args.scale, counts, args.workdir, pg, args.row_timeout) if "R1" in names else []
        )
    finally:
        pg.stop()
    ok = print_table(rows)
    print(f"after: {load()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

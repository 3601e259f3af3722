"""Does gcbulk's memory grow with the work done? RSS of one ``gcbulk run`` against the cases it has finished.

    python -m benchmarks.memory_growth [--cases 2000] [--checkpoints 200,500,1000,2000] [--follow]
                                       [--feed 40] [--file-bytes 1024] [--tutorial] [--heap] [--tracemalloc]
                                       [--workdir DIR]
    python -m benchmarks.memory_growth --cases 40 --checkpoints 10,30     # a quick run (the smoke test's)

A fresh emulator (``benchmarks/harness.py``, file sockets: an import is a file copy) and ``--cases`` tiny cases (one
file of ``--file-bytes``), so the run is all per-case bookkeeping and no bytes: what grows here is what the process
keeps per case. The client is ``gcbulk run JOB`` in a child process; this script samples its resident set size
(psutil) and counts the ``case_done`` lines of its event file, and prints, at each checkpoint, the RSS, the growth
since the first checkpoint and the KiB kept per case finished since the previous one.

* one-shot (default): every case is in the tree before the run starts.
* ``--follow``: ``gcbulk run --follow --poll-interval 1``; the script adds ``--feed`` case folders per second (each
  written aside and renamed into the tree, so a poll never sees half a case), and stops the worker with SIGTERM
  (exit 0 expected) once every case is done.

``--tutorial``: each case is the tutorial's (``ct.mha`` and ``seg.mha``, small, on the example study's two image
sockets), imported by the emulator, as the issue's 10–25 KiB per case was first seen.

``--heap`` (cheap): at each checkpoint the child also reports the C allocator's bytes in use and free (glibc's
``mallinfo2``), Python's live blocks and its live objects by type; the script prints them and the types that grew
per case. RSS that grows while Python's live blocks do not is memory freed but not given back, or the C side's.

``--tracemalloc``: the child runs with tracemalloc on (12 frames; much slower, so RSS figures of that run are not
comparable) and dumps a snapshot at each checkpoint (SIGUSR1); the script then prints the allocation sites that grew
most between the first and the last checkpoint, per case finished in between: what a finished case leaves behind.

Goal (issue 31): RSS within +20 MiB of its plateau from 1 000 to 100 000 cases.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (  # noqa: E402
    MIB,
    REPO,
    SEED,
    Emulator,
    child_environment,
    emulator_process,
    write_file,
    write_job,
)

KIB = 1024
SAMPLE_SECONDS = 0.1
GOAL_GROWTH_MIB = 20
FRAMES = 12
TUTORIAL_SHAPE = (4, 16, 16)  # small images: what is measured is per case, not per voxel
STALL_SECONDS = 120.0  # no case finished for this long: the run is stuck, say so rather than wait forever


@dataclass(frozen=True)
class Checkpoint:
    cases_done: int
    rss_mib: float
    seconds: float  # since the child started
    fds: int


class CasesDone:
    """Counts ``case_done`` lines of a growing event file, reading only what was appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.count = 0

    def poll(self) -> int:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return self.count
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # an unfinished last line is counted once it is complete
        self.count += sum(1 for line in lines if b'"event":"case_done"' in line)
        return self.count


def write_case(root: Path, staging: Path, index: int, args: argparse.Namespace) -> None:
    """``root/case-NNNNNN/file-0.bin`` (``--tutorial``: ``ct.mha`` and ``seg.mha``), written in ``staging`` and
    renamed in, so a poll sees the case whole."""
    folder = staging / f"case-{index:06d}"
    if args.tutorial:
        # Imported here, not at the top: the --heap and --tracemalloc child runs this module, and numpy and
        # SimpleITK loaded for nothing would be part of the RSS it measures.
        from tests.imaging import make_mask, make_mha

        make_mha(folder / "ct.mha", TUTORIAL_SHAPE, seed=index)
        make_mask(folder / "seg.mha", TUTORIAL_SHAPE, seed=index + 7)
    else:
        write_file(folder / "file-0.bin", args.file_bytes, index)
    folder.rename(root / folder.name)


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33+): what the C allocator holds, which tracemalloc does not see."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def heap_figures() -> dict[str, float]:
    """The process's heap at this moment: C allocator in use and free (glibc), Python's live blocks and objects."""
    figures: dict[str, float] = {"python_blocks": sys.getallocatedblocks(), "gc_objects": len(gc.get_objects())}
    try:
        # The SQLite library Python's sqlite3 module is linked with (the same shared object: dlopen returns the one
        # already loaded): the ledger's page caches and statements, part of the C allocator's bytes in use.
        sqlite = ctypes.CDLL("libsqlite3.so.0")
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        figures["sqlite_mib"] = sqlite.sqlite3_memory_used() / MIB
    except (OSError, AttributeError):  # a Python with SQLite built in, or not on Linux: not shown
        pass
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):  # not glibc (musl, macOS): only Python's own figures
        return figures
    figures["malloc_in_use_mib"] = (info.uordblks + info.hblkhd) / MIB
    figures["malloc_free_mib"] = info.fordblks / MIB
    return figures


def write_heap(path: Path) -> None:
    """The heap's figures and the live objects by type, after a full collection: what tracemalloc's sites cannot say
    (which objects a library's allocation became, and which of them a cycle would have freed anyway)."""
    gc.collect()
    types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    # Tab-separated lines, not JSON: the JSON encoder keeps some of what it allocates, which a later tracemalloc
    # snapshot would count as growth.
    lines = [f"figure\t{name}\t{value!r}" for name, value in heap_figures().items()]
    lines += [f"type\t{name}\t{count}" for name, count in types.items()]
    path.write_text("\n".join(lines))


def read_heap(path: Path) -> tuple[dict[str, float], collections.Counter[str]]:
    figures: dict[str, float] = {}
    types: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        kind, name, value = line.split("\t")
        if kind == "figure":
            figures[name] = float(value)
        else:
            types[name] = int(value)
    return figures, types


def child_main(argv: list[str], snapshots: Path, trace: bool) -> int:
    """``gcbulk run`` in this process; SIGUSR1 writes ``snapshots/N.heap.tsv`` (and with ``trace``, tracemalloc on
    from the start, a snapshot ``snapshots/N.pickle``), then ``snapshots/N.done``."""
    from gcbulk.engine.cli import main

    if trace:
        tracemalloc.start(FRAMES)
    taken = 0

    def dump(_signum: int, _frame: object) -> None:
        nonlocal taken
        write_heap(snapshots / f"{taken}.heap.tsv")
        if trace:  # after the heap's figures, whose objects are gone by now: the snapshot shows gcbulk's alone
            tracemalloc.take_snapshot().dump(str(snapshots / f"{taken}.pickle"))
        (snapshots / f"{taken}.done").touch()
        taken += 1

    signal.signal(signal.SIGUSR1, dump)
    return main(argv)


def run(args: argparse.Namespace, emulator: Emulator, workdir: Path) -> tuple[list[Checkpoint], int]:
    import psutil

    root, staging = workdir / "cases", workdir / "staging"
    root.mkdir(parents=True)
    staging.mkdir()
    written = 0
    if not args.follow:
        for written in range(args.cases):
            write_case(root, staging, written, args)
        written = args.cases
    if args.tutorial:
        from benchmarks.capacity_runs import write_tutorial_job  # the tutorial's job (see write_case on imports)

        job = write_tutorial_job(workdir, emulator, root, "")
    else:
        job = write_job(workdir, emulator, root, 1)
    events = CasesDone(job.with_name(job.stem + ".events.jsonl"))
    gcbulk = ["run", str(job), "--progress-interval", "3600", "--metrics-address", "off"]
    if args.follow:
        gcbulk += ["--follow", "--poll-interval", "1"]
    snapshots = workdir / "snapshots"
    if args.tracemalloc or args.heap:
        snapshots.mkdir()
        trace = "trace" if args.tracemalloc else "heap"
        command = [sys.executable, "-m", "benchmarks.memory_growth", "--child", str(snapshots), trace, "--", *gcbulk]
    else:
        command = [sys.executable, "-m", "gcbulk", *gcbulk]
    env = child_environment(GRAND_CHALLENGE_AUTHORIZATION=emulator.token)  # with bytecode caches, as installed
    log = (workdir / "gcbulk.log").open("w")
    child = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    process = psutil.Process(child.pid)
    started = last_progress = time.monotonic()
    seen = 0  # cases done at the last look
    checkpoints: list[Checkpoint] = []
    pending = sorted(args.checkpoints)
    fed_at = started
    try:
        while pending:
            now = time.monotonic()
            if args.follow and written < args.cases and now - fed_at >= 1.0:
                for _ in range(min(args.feed, args.cases - written)):
                    write_case(root, staging, written, args)
                    written += 1
                fed_at = now
            done = events.poll()
            if done > seen:
                seen, last_progress = done, now
            if done >= pending[0]:
                try:
                    rss, fds = process.memory_info().rss / MIB, process.num_fds()
                except psutil.NoSuchProcess:
                    break  # it exited as the checkpoint came (a one-shot run's last case): nothing left to measure
                checkpoints.append(Checkpoint(done, rss, now - started, fds))
                print(f"  {done:>8,} cases done: RSS {rss:7.1f} MiB", flush=True)
                if args.tracemalloc or args.heap:
                    child.send_signal(signal.SIGUSR1)
                    marker = snapshots / f"{len(checkpoints) - 1}.done"
                    while not marker.exists() and child.poll() is None:  # the child writes the snapshot
                        time.sleep(SAMPLE_SECONDS)
                while pending and done >= pending[0]:  # checkpoints passed at once are taken once
                    pending.pop(0)
                continue
            if child.poll() is not None:
                break  # it ended before the next checkpoint
            if now - last_progress > STALL_SECONDS:
                print(f"no case finished for {STALL_SECONDS:.0f} s; stopping (log: {log.name})", file=sys.stderr)
                break
            time.sleep(SAMPLE_SECONDS)
        if args.follow and child.poll() is None:
            child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()
    return checkpoints, code


def print_table(checkpoints: list[Checkpoint]) -> None:
    print(f"\n{'cases done':>10}  {'RSS MiB':>8}  {'growth MiB':>10}  {'KiB/case since previous':>23}  {'fds':>4}")
    for n, point in enumerate(checkpoints):
        first = checkpoints[0]
        per_case = ""
        if n:
            previous = checkpoints[n - 1]
            per_case = f"{(point.rss_mib - previous.rss_mib) * KIB / (point.cases_done - previous.cases_done):.1f}"
        print(
            f"{point.cases_done:>10,}  {point.rss_mib:>8.1f}  {point.rss_mib - first.rss_mib:>+10.1f}  "
            f"{per_case:>23}  {point.fds:>4}"
        )
    if len(checkpoints) >= 2:
        growth = checkpoints[-1].rss_mib - checkpoints[0].rss_mib
        verdict = "within" if growth <= GOAL_GROWTH_MIB else "MORE than"
        print(
            f"growth from {checkpoints[0].cases_done:,} to {checkpoints[-1].cases_done:,} cases: {growth:+.1f} MiB, "
            f"{verdict} the goal's +{GOAL_GROWTH_MIB} MiB (issue 31: from 1 000 to 100 000 cases)"
        )


def print_growth(snapshots: Path, checkpoints: list[Checkpoint], top: int) -> None:
    """The allocation sites that grew most between the first and last snapshot, per case finished in between."""
    first = tracemalloc.Snapshot.load(str(snapshots / "0.pickle"))
    last = tracemalloc.Snapshot.load(str(snapshots / f"{len(checkpoints) - 1}.pickle"))
    cases = checkpoints[-1].cases_done - checkpoints[0].cases_done
    keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = last.filter_traces(keep).compare_to(first.filter_traces(keep), "traceback")
    total = sum(stat.size_diff for stat in stats)
    print(f"\ntracemalloc: {total / KIB / cases:+.2f} KiB per case finished ({cases:,} cases); most grown sites:")
    for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:top]:
        if stat.size_diff <= 0:
            break
        # The innermost frames first, gcbulk's own (its folders under the repository, or an installed gcbulk) marked
        # by their room, so a line shows where gcbulk asked for the memory and what library kept it.
        where = " ← ".join(_frame(f) for f in list(reversed(stat.traceback))[:6])
        print(f"  {stat.size_diff / cases:>8.1f} B/case  {stat.count_diff / cases:>6.2f} blocks/case  {where}")


def print_heap(snapshots: Path, checkpoints: list[Checkpoint], top: int) -> None:
    """Where the RSS is, at each checkpoint: the C allocator's bytes in use and free (RSS that grows while Python's
    live blocks stay flat is the C side: SQLite, OpenSSL, or free memory the allocator does not give back), and the
    live object types (gc) that grew most between the first and the last checkpoint."""
    heaps = [read_heap(snapshots / f"{n}.heap.tsv") for n in range(len(checkpoints))]
    print(
        f"\n{'cases done':>10}  {'RSS MiB':>8}  {'malloc in use MiB':>17}  {'of it SQLite MiB':>16}  "
        f"{'malloc free MiB':>15}  {'Python blocks':>13}"
    )

    def mib(value: float | None, width: int) -> str:
        return f"{'-' if value is None else f'{value:.1f}':>{width}}"

    for point, (figures, _) in zip(checkpoints, heaps, strict=True):
        print(
            f"{point.cases_done:>10,}  {point.rss_mib:>8.1f}  {mib(figures.get('malloc_in_use_mib'), 17)}  "
            f"{mib(figures.get('sqlite_mib'), 16)}  {mib(figures.get('malloc_free_mib'), 15)}  "
            f"{int(figures['python_blocks']):>13,}"
        )
    cases = checkpoints[-1].cases_done - checkpoints[0].cases_done
    before, after = heaps[0][1], heaps[-1][1]
    grown = sorted(((after[name] - before[name], name) for name in after if after[name] > before[name]), reverse=True)
    print("live objects (gc) that grew most, per case finished:")
    for count, name in grown[:top]:
        print(f"  {count / cases:>8.3f} per case  {name} ({before[name]:,} → {after[name]:,})")


def big_study_seed(workdir: Path, display_sets: int) -> Path:
    """The benchmark seed with its study holding ``display_sets`` display sets made by someone else (emulator/seed.py
    ``display_sets``)."""
    text = SEED.read_text(encoding="utf-8")
    study = 'slug = "bench-study"\n'
    assert text.count(study) == 1, f"{SEED}: the study's slug line moved; update big_study_seed"
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "big-study-seed.toml"
    path.write_text(text.replace(study, f"{study}display_sets = {display_sets}\n"), encoding="utf-8")
    return path


def _frame(frame: tracemalloc.Frame) -> str:
    path = Path(frame.filename)
    parts = path.parts
    for room in ("engine", "state", "emulator"):
        if room in parts and ("gcbulk" in parts or str(path).startswith(str(REPO))):
            return "/".join(parts[parts.index(room) :]) + f":{frame.lineno}"
    return f"{path.name}:{frame.lineno}"


def main() -> int:
    if len(sys.argv) > 3 and sys.argv[1] == "--child":  # --child SNAPSHOTS trace|heap -- GCBULK ARGS
        return child_main(sys.argv[5:], Path(sys.argv[2]), sys.argv[3] == "trace")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument(
        "--checkpoints",
        type=lambda text: [int(n) for n in text.split(",")],
        help="cases done at which to take the RSS (default: 10 %%, 25 %%, 50 %% and 90 %% of --cases)",
    )
    parser.add_argument("--follow", action="store_true", help="gcbulk run --follow, fed --feed cases per second")
    parser.add_argument("--feed", type=int, default=40, help="cases added per second in --follow mode")
    parser.add_argument("--file-bytes", type=int, default=1024)
    parser.add_argument(
        "--tutorial",
        action="store_true",
        help="tutorial cases: ct.mha and seg.mha on the example study's image sockets, imported by the emulator",
    )
    parser.add_argument("--tracemalloc", action="store_true", help="print what grew, per case (slower)")
    parser.add_argument(
        "--heap",
        action="store_true",
        help="print the C allocator's in-use and free bytes and Python's live blocks at each checkpoint (cheap)",
    )
    parser.add_argument(
        "--existing-display-sets",
        type=int,
        default=0,
        help="the study starts with this many display sets someone else made: a big study, which a follow-mode "
        "run lists at every round (not with --tutorial)",
    )
    parser.add_argument("--top", type=int, default=15, help="allocation sites shown with --tracemalloc")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gcbulk-bench-memory")
    args = parser.parse_args()
    checkpoints = args.checkpoints or [args.cases // 10, args.cases // 4, args.cases // 2, args.cases * 9 // 10]
    args.checkpoints = sorted({n for n in checkpoints if 0 < n <= args.cases})
    if not args.checkpoints:
        parser.error("--checkpoints: give case counts between 1 and --cases")
    mode = f"follow mode, {args.feed} cases/s fed" if args.follow else "one-shot"
    one, five, fifteen = os.getloadavg()
    shape = "×".join(map(str, TUTORIAL_SHAPE))
    what = (
        f"tutorial cases (ct.mha and seg.mha of {shape} voxels)"
        if args.tutorial
        else f"cases × 1 file of {args.file_bytes} B"
    )
    print(
        f"{args.cases:,} {what}, gcbulk run ({mode}); load average {one:.2f}, {five:.2f}, {fifteen:.2f} on "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    workdir = args.workdir
    seed = None if args.tutorial else SEED  # None: the emulator's bundled example study, whose sockets are images
    if args.existing_display_sets:
        if seed is None:
            parser.error("--existing-display-sets: not with --tutorial (the bundled study's seed is not rewritten)")
        seed = big_study_seed(workdir, args.existing_display_sets)
        print(f"the study starts with {args.existing_display_sets:,} display sets someone else made", flush=True)
    with emulator_process(workdir / "emulator", import_delay=0.0, seed=seed) as emulator:
        for stale in ("cases", "staging", "snapshots"):
            shutil.rmtree(workdir / stale, ignore_errors=True)
        checkpoints, code = run(args, emulator, workdir)
    print_table(checkpoints)
    if args.tracemalloc and len(checkpoints) >= 2:
        print_growth(workdir / "snapshots", checkpoints, args.top)
    if (args.tracemalloc or args.heap) and len(checkpoints) >= 2:
        print_heap(workdir / "snapshots", checkpoints, args.top)
    print(f"gcbulk run exited {code}")
    complete = bool(checkpoints) and checkpoints[-1].cases_done >= args.checkpoints[-1]
    if not complete:
        reached = checkpoints[-1].cases_done if checkpoints else 0
        print(f"stopped at {reached} cases done, before {args.checkpoints[-1]}; see {workdir / 'gcbulk.log'}")
    return 0 if code == 0 and complete else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the ledger costs per case: SQL statements, transactions and ledger-thread CPU of a real ``gcbulk run``.

    python -m benchmarks.ledger_statements [--cases 50] [--files 2] [--size 65536] [--runs 3] [--top 25]
                                           [--postgres]

Each run starts a fresh emulator (``benchmarks/harness.py``, file sockets: an import is a file copy), writes
``--cases`` cases of ``--files`` files each, and runs ``gcbulk run`` in a child process of this script that counts,
on the ledger's own thread (``engine/upload/journal.LedgerRunner``):

* statements: sqlite3's ``set_trace_callback`` on the ledger's connection (BEGIN, SAVEPOINT, COMMIT included);
* transactions: the BEGINs (a write outside one would be a transaction of its own: counted too);
* ledger-thread CPU: ``time.thread_time()`` around every call the engine sends to that thread;
* with ``--postgres`` (a throwaway server from ``tests/pg_server.py``): round trips, i.e. query strings sent to the
  server (the store batches held writes into one), an ``executemany`` counted as one; per case and per ledger call.

The planning of the job is part of ``gcbulk run`` and counted with it; the ledger calls are also listed by name, so
planning and transfer can be told apart. Printed: totals and per case for each run, then (for the last run) the
most repeated statements with the ledger method and the ``state/`` line that issued them.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import REPO, child_environment, compile_sources, emulator_process, make_cases, write_job  # noqa: E402

# Ledger calls that are no part of moving a case: opening (migrations), recording the plan (a function, shown as
# "<lambda>"), closing.
_SETUP_CALLS = frozenset({"open", "close", "<lambda>", "?"})
_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b|X'[0-9A-Fa-f]*'")


def _shape(sql: str) -> str:
    """A statement with its values replaced by ``?`` (the trace shows them bound) and savepoint names merged."""
    sql = re.sub(r"(gcbulk|sqlite_utils)_[0-9a-f]+", "<name>", sql.strip())
    return re.sub(r"\s+", " ", _LITERALS.sub("?", sql))


# ------------------------------------------------------------------------------------------------ child process
def _child(job: str, out: str, ledger: str | None) -> int:
    """``gcbulk run job`` in this process, with the ledger thread instrumented; the counts go to ``out``."""
    from gcbulk.engine.cli import main
    from gcbulk.engine.upload import journal
    from gcbulk.state import ledger as ledger_module

    local = threading.local()
    counts = {"statements": 0, "transactions": 0, "calls": 0, "cpu": 0.0, "round_trips": 0}
    # The same, without opening the ledger (migrations) and recording the plan: what the transfer of the cases costs.
    transfer = {"statements": 0, "transactions": 0, "cpu": 0.0, "round_trips": 0}
    shapes: Counter[str] = Counter()
    sites: Counter[tuple[str, str, str]] = Counter()
    calls: Counter[str] = Counter()
    call_cpu: Counter[str] = Counter()
    call_trips: Counter[str] = Counter()
    state = {"open": False}
    state_dir = str(REPO / "state")

    def site() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith(state_dir) and not name.endswith(("pg_store.py",)):
                if frame.f_code.co_name not in ("_one", "_all", "_scalar", "_get", "atomic", "__enter__", "__exit__"):
                    return f"{Path(name).name}:{frame.f_lineno} {frame.f_code.co_name}"
            frame = frame.f_back
        return "?"

    def count(sql: str) -> None:
        counts["statements"] += 1
        in_transfer = getattr(local, "call", "?") not in _SETUP_CALLS
        transfer["statements"] += in_transfer
        shape = _shape(sql)
        head = shape.split(" ", 1)[0].upper()
        if head == "BEGIN":
            counts["transactions"] += 1
            transfer["transactions"] += in_transfer
            state["open"] = True
        elif head in ("COMMIT", "ROLLBACK", "END"):
            state["open"] = False
        elif head in ("INSERT", "UPDATE", "DELETE") and not state["open"]:
            counts["transactions"] += 1  # autocommitted on its own
            transfer["transactions"] += in_transfer
        shapes[shape] += 1
        sites[(shape, getattr(local, "call", "?"), site())] += 1

    original_configure = ledger_module.configure

    def configure(db):  # type: ignore[no-untyped-def]
        original_configure(db)
        db.conn.set_trace_callback(count)

    ledger_module.configure = configure

    if ledger is not None:  # PostgreSQL: every query string sent is one round trip
        import psycopg

        from gcbulk.state import pg_store

        original_execute = psycopg.Cursor.execute

        def execute(self, query, params=None, **kwargs):  # type: ignore[no-untyped-def]
            if threading.current_thread().name.startswith("gcbulk-ledger"):
                counts["round_trips"] += 1
                call_trips[getattr(local, "call", "?")] += 1
                transfer["round_trips"] += getattr(local, "call", "?") not in _SETUP_CALLS
                text = query if isinstance(query, str) else str(query)
                for statement in text.split("; "):
                    count(statement)
            return original_execute(self, query, params, **kwargs)

        original_executemany = psycopg.Cursor.executemany

        def executemany(self, query, params_seq, **kwargs):  # type: ignore[no-untyped-def]
            # One round trip however many rows: psycopg sends them in pipeline mode and waits once.
            if threading.current_thread().name.startswith("gcbulk-ledger"):
                counts["round_trips"] += 1
                call_trips[getattr(local, "call", "?")] += 1
                transfer["round_trips"] += getattr(local, "call", "?") not in _SETUP_CALLS
                params_seq = list(params_seq)
                for _ in params_seq:
                    count(query if isinstance(query, str) else str(query))
            return original_executemany(self, query, params_seq, **kwargs)

        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = executemany  # type: ignore[method-assign]
        pg_store.psycopg.Cursor.execute = execute  # type: ignore[attr-defined]

    original_translated = journal.LedgerRunner._translated

    def translated(self, call):  # type: ignore[no-untyped-def]
        fn = getattr(call, "func", call)  # LedgerRunner hands over functools.partial(ledger method, *args)
        # A journal's step arrives as the Step itself: named by its method (case_started), not its repr.
        name = getattr(fn, "__name__", None) or getattr(fn, "name", None) or repr(fn)
        if name == "record_batch" and len(call.args[0]) == 1:  # one caller's recording, named as before batches
            alone = call.args[0][0]
            name = (
                "record_then_read"
                if alone.query
                else alone.steps[0].name
                if len(alone.steps) == 1
                else "record_together"
            )
        local.call = name
        started = time.thread_time()
        try:
            return original_translated(self, call)
        finally:
            spent = time.thread_time() - started
            counts["cpu"] += spent
            if name not in _SETUP_CALLS:
                transfer["cpu"] += spent
            counts["calls"] += 1
            calls[name] += 1
            call_cpu[name] += spent
            local.call = "?"

    journal.LedgerRunner._translated = translated  # type: ignore[method-assign]
    argv = ["run", job, "--progress-interval", "30"] + (["--ledger", ledger] if ledger else [])
    cpu_before = time.process_time()
    code = main(argv)
    process_cpu = time.process_time() - cpu_before
    Path(out).write_text(
        json.dumps(
            {
                "code": code,
                **counts,
                "transfer": transfer,
                "process_cpu": process_cpu,
                "shapes": shapes.most_common(),
                "sites": [[list(key), n] for key, n in sites.most_common()],
                "by_call": [[name, n, call_cpu[name], call_trips[name]] for name, n in calls.most_common()],
            }
        )
    )
    return code


# ----------------------------------------------------------------------------------------------- parent process
def _one_run(workdir: Path, cases: int, files: int, size: int, dsn: str | None) -> dict:
    with emulator_process(workdir / "emulator") as emulator:
        root = workdir / "cases"
        make_cases(root, cases, files, size)
        job = write_job(workdir, emulator, root, files)
        out = workdir / "counts.json"
        env = child_environment(GRAND_CHALLENGE_AUTHORIZATION=emulator.token)
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.ledger_statements", "--child", str(job), str(out)]
            + (["--dsn", dsn] if dsn else []),
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"gcbulk run failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL ledger (tests/pg_server.py)")
    parser.add_argument("--child", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(*args.child, args.dsn)
    compile_sources()
    server = None
    if args.postgres:
        from tests.pg_server import PgServer  # type: ignore[import-not-found]

        server = PgServer.start()
    try:
        results = []
        for run in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="gcbulk-ledger-bench-") as tmp:
                dsn = None if server is None else server.new_database()
                r = _one_run(Path(tmp), args.cases, args.files, args.size, dsn)
            results.append(r)
            per_case = {k: r[k] / args.cases for k in ("statements", "transactions", "calls", "round_trips")}
            print(
                f"run {run + 1}: {r['statements']} statements ({per_case['statements']:.1f}/case), "
                f"{r['transactions']} transactions ({per_case['transactions']:.1f}/case), "
                f"{r['calls']} ledger calls ({per_case['calls']:.1f}/case), "
                + (f"{r['round_trips']} round trips ({per_case['round_trips']:.1f}/case), " if server else "")
                + f"ledger-thread CPU {r['cpu']:.3f} s ({r['cpu'] / args.cases * 1000:.2f} ms/case), "
                f"process CPU {r['process_cpu']:.2f} s",
                flush=True,
            )
            t = r["transfer"]
            print(
                f"  transfer only (no open, plan, close): {t['statements'] / args.cases:.1f} statements/case, "
                f"{t['transactions'] / args.cases:.1f} transactions/case, "
                + (f"{t['round_trips'] / args.cases:.1f} round trips/case, " if server else "")
                + f"ledger-thread CPU {t['cpu']:.3f} s ({t['cpu'] / args.cases * 1000:.2f} ms/case)",
                flush=True,
            )
    finally:
        if server is not None:
            server.stop()
    for label, cpus in (
        ("ledger-thread CPU", sorted(r["cpu"] for r in results)),
        ("  transfer only", sorted(r["transfer"]["cpu"] for r in results)),
        ("process CPU", sorted(r["process_cpu"] for r in results)),
    ):
        print(f"{label} over {len(results)} runs: min {cpus[0]:.3f} s, median {cpus[len(cpus) // 2]:.3f} s")
    last = results[-1]
    print("\nledger calls of the last run (count, CPU s" + (", PostgreSQL round trips):" if server else "):"))
    for name, n, cpu, trips in last["by_call"][: args.top]:
        print(f"  {n:6d}  {cpu:7.3f}  " + (f"{trips:6d}  " if server else "") + name[:100])
    print("\nmost repeated statements of the last run:")
    for shape, n in last["shapes"][: args.top]:
        print(f"  {n:6d}  {shape[:150]}")
    print("\nby call site (statement, ledger call, state/ line):")
    for (shape, call, where), n in last["sites"][: args.top]:
        print(f"  {n:6d}  {call:28s} {where:40s} {shape[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the transfer benchmarks: the emulator in its own process, workload files, timed gcbulk runs.

The emulator runs as a separate process (``gcbulk-emulator``), so the client under test does not share its Python
interpreter (and GIL) with the server. Its seed (``bench_seed.toml``) has ten *file* sockets, so "importing" a value
is a file copy: the benchmark measures transfer, not SimpleITK.
"""

from __future__ import annotations

import compileall
import functools
import json
import os
import resource
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEED = Path(__file__).with_name("bench_seed.toml")
MIB = 1024 * 1024
FILE_SOCKETS = [f"bench-file-{k}" for k in range(10)]


@dataclass(frozen=True)
class Emulator:
    base_url: str
    ca_file: str
    admin_url: str
    token: str
    process: subprocess.Popen

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.admin_url + path.lstrip("/"),
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        context = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(request, context=context) as response:
            return json.loads(response.read() or b"null")

    def set_latency(self, seconds: float, *, stream_bytes_per_second: float | None = None) -> None:
        """Latency on every request; optionally a per-connection bandwidth cap on part PUTs (a long-haul TCP
        stream: one connection alone cannot fill the link)."""
        rules: list[dict[str, Any]] = [{"match": "* *", "latency_seconds": seconds}] if seconds else []
        if stream_bytes_per_second:
            rules.append({"match": "PUT s3", "bandwidth_bytes_per_second": stream_bytes_per_second})
        self.admin("PUT", "faults", {"rules": rules})


@contextmanager
def emulator_process(
    data_dir: Path, *, import_delay: float = 0.05, profile: str | None = None, seed: Path | None = SEED
) -> Iterator[Emulator]:
    """A fresh emulator process with the benchmark seed (``seed=None``: the bundled example study, whose sockets
    are real images), optionally with a capacity profile; its data directory is removed afterwards."""
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    extra = (["--seed-study", str(seed)] if seed else []) + (["--profile", profile] if profile else [])
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcbulk.emulator.cli",
            "--port",
            "0",
            "--s3-port",
            "0",
            *extra,
            "--data-dir",
            str(data_dir),
            "--import-delay",
            str(import_delay),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    try:
        ready = None
        for line in process.stdout:  # type: ignore[union-attr]
            if line.startswith("{") and '"ready"' in line:
                ready = json.loads(line)
                break
        if ready is None:
            raise RuntimeError("the emulator did not start")
        yield Emulator(
            base_url=ready["base_url"],
            ca_file=ready["ca_file"],
            admin_url=ready["admin_url"],
            token=ready["tokens"]["editor"],
            process=process,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


def write_file(path: Path, size: int, seed: int) -> None:
    """``size`` bytes of incompressible data (so no layer can cheat by compressing), unless already there."""
    if path.exists() and path.stat().st_size == size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(min(size, 4 * MIB)) if size else b""
    with path.open("wb") as handle:
        written = 0
        while written < size:
            chunk = block[: size - written]
            handle.write(bytes([seed % 256]) + chunk[1:] if written == 0 else chunk)
            written += len(chunk)


def make_cases(root: Path, cases: int, files_per_case: int, file_size: int) -> list[tuple[str, list[Path]]]:
    """``root/case-NNNN/file-K.bin``; returns (title, files) per case."""
    layout = []
    for c in range(cases):
        folder = root / f"case-{c:04d}"
        files = []
        for k in range(files_per_case):
            path = folder / f"file-{k}.bin"
            write_file(path, file_size, c * 10 + k)
            files.append(path)
        layout.append((folder.name, files))
    return layout


def write_job(directory: Path, emulator: Emulator, case_root: Path, files_per_case: int, engine: str = "") -> Path:
    rules = "".join(
        f'[[rules]]\nglob = "file-{k}.bin"\nsocket = "{FILE_SOCKETS[k]}"\n\n' for k in range(files_per_case)
    )
    job = directory / "bench-job.toml"
    job.write_text(
        f'reader_study = "bench-study"\nbase_url = "{emulator.base_url}"\ncase_root = "{case_root}"\n'
        f'ca_file = "{emulator.ca_file}"\n\n{rules}[engine]\n{engine}\n'
    )
    for stale in directory.glob("bench-job.ledger.sqlite*"):
        stale.unlink()
    (directory / "bench-job.events.jsonl").unlink(missing_ok=True)
    return job


def run_gcbulk(job: Path, emulator: Emulator) -> float:
    """Wall seconds of ``gcbulk run`` (plan, uploads, display sets, waiting for every value to be in place)."""
    return run_gcbulk_measured(job, emulator).seconds


@dataclass(frozen=True)
class Timed:
    seconds: float  # wall
    cpu_seconds: float  # the client process's user + system time (resource.getrusage)


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@functools.cache
def compile_sources() -> None:
    """Byte-compiles gcbulk's sources once, as ``pip install`` does for an installed package, so that the first
    measured process does not pay the compilation either (the children then keep their caches: ``child_environment``)."""
    for package in ("gcbulk", "engine", "state", "emulator", "benchmarks"):
        compileall.compile_dir(REPO / package, quiet=1)


def child_environment(**extra: str) -> dict[str, str]:
    """The environment of a process a benchmark starts and measures: this one's, plus ``extra``, without
    ``PYTHONDONTWRITEBYTECODE``. With that variable set (this workplace's shell sets it) an editable checkout's gcbulk
    recompiles every module it imports in every process (``gcbulk run --help``: 0.72 s of CPU against 0.46 s with
    caches), while gcapi, installed from a wheel, reads its compiled bytecode: an installed gcbulk has its bytecode too,
    so a measurement without caches charges gcbulk a cost no user pays."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    environment.update(extra)
    return environment


def run_measured(what: str, argv: list[str], emulator: Emulator) -> Timed:
    """A client in its own process: wall seconds and its CPU seconds, start-up included (RUSAGE_CHILDREN grows by
    exactly the child's once it is waited for; the emulator, also a child, is still running and not counted).
    gcbulk and gcapi are both measured this way, so neither is spared its interpreter start and imports."""
    timed, _ = run_measured_with_output(what, argv, emulator.token)
    return timed


def run_measured_with_output(what: str, argv: list[str], token: str) -> tuple[Timed, str]:
    """``run_measured`` against any server whose API token is ``token`` (a local emulator's or a remote one's), and
    the client's stdout (where a client prints what it made)."""
    compile_sources()
    env = child_environment(GRAND_CHALLENGE_AUTHORIZATION=token)
    cpu_before = cpu_seconds(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return Timed(elapsed, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before), result.stdout


def run_gcbulk_measured(job: Path, emulator: Emulator) -> Timed:
    """``gcbulk run`` of ``job``: plan, uploads, display sets, and waiting until every value is in place."""
    return run_measured("gcbulk run", ["-m", "gcbulk", "run", str(job), "--progress-interval", "30"], emulator)


def run_gcapi_measured(
    mode: str, emulator: Emulator, study: str, layout: list[tuple[str, list[Path]]], workdir: Path
) -> Timed:
    """gcapi in its own process (``benchmarks/gcapi_clients.py``, ``mode`` ``files`` or ``tutorial``)."""
    layout_file = workdir / "gcapi-layout.json"
    layout_file.write_text(
        json.dumps(
            {
                "base_url": emulator.base_url,
                "ca_file": emulator.ca_file,
                "study": study,
                "cases": [[title, [str(p) for p in files]] for title, files in layout],
            }
        )
    )
    return run_measured(f"gcapi ({mode})", ["-m", "benchmarks.gcapi_clients", mode, str(layout_file)], emulator)

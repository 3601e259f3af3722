"""gcbulk against gcapi 0.16.1 and against a bare PUT loop, on the same workloads and the same emulator.

    python benchmarks/compare_gcapi.py [--scale 1.0] [--only W1,W2,W3] [--workdir DIR]

Workloads (issue 5): W1 200 cases × 10 files × 1 MiB; W2 4 files × 512 MiB; W3 = W1 with 50 ms of latency injected
on every request (the emulator's fault plan). ``--scale`` shrinks them (cases for W1/W3, file size for W2).

* gcapi: one ``add_case_to_reader_study`` per case, as the tutorial does (gcapi does not wait for the imports).
* gcbulk: ``gcbulk run`` of a job over the same tree: plan, uploads, display sets, and waiting until every value is in
  place — more work than gcapi does, all inside the timing.
* ceiling: a bare aiohttp loop PUTting the same bytes to presigned URLs (16 in flight, 16 MiB parts), with the
  uploads created and presigned before the clock starts: the fastest this machine and emulator move bytes.

Each client gets a fresh emulator process. Goals: W1 ≥ 5× gcapi; W2 ≥ 3× gcapi and ≥ 70 % of the ceiling;
W3 ≥ 10× gcapi.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (  # noqa: E402
    FILE_SOCKETS,
    MIB,
    Emulator,
    emulator_process,
    make_cases,
    run_gcbulk,
    write_job,
)

CEILING_PART = 16 * MIB
CEILING_IN_FLIGHT = 16
# Many small files want many in flight (each is a few round trips); bytes in flight stay 16 parts.
GCBULK_ENGINE = "files_in_flight = 64\nparts_in_flight = 16\napi_calls_in_flight = 64\n"


@dataclass(frozen=True)
class Workload:
    name: str
    cases: int
    files_per_case: int
    file_size: int
    latency: float
    goal_vs_gcapi: float
    goal_vs_ceiling: float | None = None
    stream_bytes_per_second: float | None = None

    def scaled(self, scale: float) -> Workload:
        if self.cases > 10:
            return dataclasses.replace(self, cases=max(2, round(self.cases * scale)))
        return dataclasses.replace(self, file_size=max(8 * MIB, round(self.file_size * scale / MIB) * MIB))

    @property
    def total_bytes(self) -> int:
        return self.cases * self.files_per_case * self.file_size

    def describe(self) -> str:
        latency = f", {self.latency * 1000:.0f} ms latency" if self.latency else ""
        if self.stream_bytes_per_second:
            latency += f", {self.stream_bytes_per_second / MIB:.0f} MiB/s per connection"
        return f"{self.cases} cases × {self.files_per_case} files × {self.file_size / MIB:.0f} MiB{latency}"


WORKLOADS = [
    Workload("W1", 200, 10, 1 * MIB, 0.0, 5.0),
    Workload("W2", 4, 1, 512 * MIB, 0.0, 3.0, 0.70),
    Workload("W3", 200, 10, 1 * MIB, 0.05, 10.0),
    # Not in the issue: W2 over a long-haul link, where one TCP stream cannot fill the pipe (modelled as a per-connection
    # cap on part PUTs). On loopback (W2) a single stream already saturates the emulator's CPU, so no client can be
    # 3× faster than gcapi there; W2b shows the same files where parallel parts matter, as on a real WAN.
    Workload("W2b", 4, 1, 512 * MIB, 0.0, 3.0, 0.70, stream_bytes_per_second=16 * MIB),
]


def run_gcapi(emulator: Emulator, layout: list[tuple[str, list[Path]]]) -> float:
    import gcapi

    client = gcapi.Client(token=emulator.token, base_url=emulator.base_url, verify=emulator.ca_file)
    started = time.perf_counter()
    for title, files in layout:
        client.add_case_to_reader_study(
            reader_study_slug="bench-study",
            values=[gcapi.SocketValueSpec(socket_slug=FILE_SOCKETS[k], file=path) for k, path in enumerate(files)],
            title=title,
        )
    return time.perf_counter() - started


async def _ceiling(emulator: Emulator, files: list[Path]) -> float:
    import aiohttp

    headers = {"Authorization": f"Bearer {emulator.token}"}
    context = ssl.create_default_context(cafile=emulator.ca_file)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=64)) as session:
        presign_gate = asyncio.Semaphore(32)

        async def prepare(path: Path) -> list[tuple[Path, int, int, str]]:
            size = path.stat().st_size
            numbers = list(range(1, max(1, -(-size // CEILING_PART)) + 1))
            async with presign_gate:
                async with session.post(f"{emulator.base_url}uploads/", json={"filename": path.name},
                                        headers=headers) as response:
                    upload = await response.json()
                async with session.patch(
                    f"{emulator.base_url}uploads/{upload['pk']}/{upload['s3_upload_id']}/generate-presigned-urls/",
                    json={"part_numbers": numbers}, headers=headers,
                ) as response:
                    urls = (await response.json())["presigned_urls"]
            return [(path, (n - 1) * CEILING_PART, min(CEILING_PART, size - (n - 1) * CEILING_PART), urls[str(n)])
                    for n in numbers]

        parts = [p for prepared in await asyncio.gather(*(prepare(f) for f in files)) for p in prepared]
        put_gate = asyncio.Semaphore(CEILING_IN_FLIGHT)

        def read(path: Path, offset: int, length: int) -> bytes:
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read(length)
            hashlib.md5(data)  # gcbulk checks every part's MD5; the ceiling pays for it too
            return data

        async def put(path: Path, offset: int, length: int, url: str) -> None:
            async with put_gate:
                data = await asyncio.to_thread(read, path, offset, length)
                async with session.put(url, data=data) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"ceiling PUT answered {response.status}")

        started = time.perf_counter()
        await asyncio.gather(*(put(*part) for part in parts))
        return time.perf_counter() - started


def run_ceiling(emulator: Emulator, layout: list[tuple[str, list[Path]]]) -> float:
    return asyncio.run(_ceiling(emulator, [path for _, files in layout for path in files]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the workloads (e.g. 0.1 for a quick run)")
    parser.add_argument("--only", default="W1,W2,W3,W2b", help="comma-separated workloads to run")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gcbulk-bench")
    args = parser.parse_args()
    chosen = [w.scaled(args.scale) for w in WORKLOADS if w.name in args.only.split(",")]
    results = []
    for workload in chosen:
        tree = args.workdir / f"{workload.cases}x{workload.files_per_case}x{workload.file_size}"
        layout = make_cases(tree / "cases", workload.cases, workload.files_per_case, workload.file_size)
        mib = workload.total_bytes / MIB
        print(f"{workload.name}: {workload.describe()} = {mib:.0f} MiB", flush=True)
        seconds: dict[str, float] = {}
        for client in ("ceiling", "gcbulk", "gcapi"):
            with emulator_process(args.workdir / "emulator") as emulator:
                emulator.set_latency(workload.latency, stream_bytes_per_second=workload.stream_bytes_per_second)
                if client == "gcapi":
                    seconds[client] = run_gcapi(emulator, layout)
                elif client == "gcbulk":
                    job = write_job(tree, emulator, tree / "cases", workload.files_per_case, engine=GCBULK_ENGINE)
                    seconds[client] = run_gcbulk(job, emulator)
                else:
                    seconds[client] = run_ceiling(emulator, layout)
            print(f"  {client:8s} {seconds[client]:8.1f} s  {mib / seconds[client]:8.1f} MiB/s", flush=True)
        results.append((workload, seconds))
    print("\nworkload  gcbulk/gcapi  (goal)  gcbulk/ceiling  (goal)")
    met = True
    for workload, seconds in results:
        vs_gcapi = seconds["gcapi"] / seconds["gcbulk"]
        vs_ceiling = seconds["ceiling"] / seconds["gcbulk"]
        ok = vs_gcapi >= workload.goal_vs_gcapi and (
            workload.goal_vs_ceiling is None or vs_ceiling >= workload.goal_vs_ceiling)
        met &= ok
        ceiling_goal = f"≥ {workload.goal_vs_ceiling:.0%}" if workload.goal_vs_ceiling else "  –"
        print(f"{workload.name:8s}  {vs_gcapi:10.1f}×  (≥ {workload.goal_vs_gcapi:.0f}×)  {vs_ceiling:12.0%}  "
              f"({ceiling_goal})  {'met' if ok else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

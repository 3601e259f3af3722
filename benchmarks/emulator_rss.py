"""How much memory does the emulator use while it receives a 2 GiB upload? (issue 3: goal < 200 MiB RSS)

Starts ``gcbulk-emulator`` in a subprocess (TLS, as clients use it), uploads a sparse 2 GiB file through the real flow
(create → presign → part PUTs of 64 MiB, several in flight → complete), samples the emulator process's RSS with
psutil every 20 ms, and prints the baseline and the peak. The client streams every part from the file in 1 MiB
reads, so neither side ever holds a part whole. Exit status 0 when the peak is under the goal, 1 otherwise.

    python benchmarks/emulator_rss.py [--size-gib 2] [--part-mib 64] [--concurrency 4] [--plain-http]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil

MIB = 1024**2
GOAL_MIB = 200
READ_BLOCK = MIB


class RssSampler:
    """Polls a process's resident set size from a thread and keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
                self.samples += 1
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def start_emulator(data_dir: Path, plain_http: bool) -> tuple[subprocess.Popen[str], dict]:
    command = [sys.executable, "-m", "gcbulk.emulator.cli", "--port", "0", "--data-dir", str(data_dir)]
    if plain_http:
        command.append("--plain-http")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("{"):
            return process, json.loads(line)
    raise SystemExit(f"the emulator exited before it was ready (exit status {process.wait()})")


async def file_slice(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        source.seek(offset)
        while length > 0:
            chunk = source.read(min(READ_BLOCK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


async def upload(ready: dict, path: Path, part_size: int, concurrency: int) -> dict:
    size = path.stat().st_size
    count = -(-size // part_size)
    tls = ssl.create_default_context(cafile=ready["ca_file"]) if ready["ca_file"] else False
    api = ready["base_url"]
    headers = {"Authorization": f"Bearer {ready['tokens']['editor']}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(api + "uploads/", json={"filename": path.name}, headers=headers, ssl=tls) as reply:
            created = await reply.json()
        actions = f"{api}uploads/{created['pk']}/{created['s3_upload_id']}/"
        numbers = list(range(1, count + 1))
        async with session.patch(
            actions + "generate-presigned-urls/", json={"part_numbers": numbers}, headers=headers, ssl=tls
        ) as reply:
            urls = (await reply.json())["presigned_urls"]
        limiter = asyncio.Semaphore(concurrency)
        etags: dict[int, str] = {}

        async def put(number: int) -> None:
            offset = (number - 1) * part_size
            length = min(part_size, size - offset)
            async with limiter:
                # An explicit Content-Length makes aiohttp stream the generator as a plain body, as S3 requires.
                async with session.put(
                    urls[str(number)],
                    data=file_slice(path, offset, length),
                    ssl=tls,
                    headers={"Content-Length": str(length)},
                ) as reply:
                    if reply.status != 200:
                        raise SystemExit(f"part {number}: HTTP {reply.status}: {await reply.text()}")
                    etags[number] = reply.headers["ETag"]

        await asyncio.gather(*(put(number) for number in numbers))
        parts = [{"ETag": etags[number], "PartNumber": number} for number in numbers]
        async with session.patch(
            actions + "complete-multipart-upload/", json={"parts": parts}, headers=headers, ssl=tls
        ) as reply:
            if reply.status != 200:
                raise SystemExit(f"complete: HTTP {reply.status}: {await reply.text()}")
            return await reply.json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--part-mib", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--plain-http", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gcbulk-rss-") as scratch:
        scratch_dir = Path(scratch)
        source = scratch_dir / "big-scan.mha"
        with source.open("wb") as sparse:
            sparse.truncate(int(args.size_gib * 1024**3))  # sparse: no disk, no memory on the client side
        process, ready = start_emulator(scratch_dir / "emulator", args.plain_http)
        try:
            emulator = psutil.Process(ready["pid"])
            baseline = emulator.memory_info().rss
            started = time.monotonic()
            with RssSampler(ready["pid"]) as sampler:
                result = asyncio.run(upload(ready, source, args.part_mib * MIB, args.concurrency))
            elapsed = time.monotonic() - started
            stored = scratch_dir / "emulator" / "objects" / "uploads" / result["key"]
            if result["status"] != "Completed" or stored.stat().st_size != source.stat().st_size:
                raise SystemExit(f"the upload did not complete whole: {result}")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    size_mib = args.size_gib * 1024
    peak_mib = sampler.peak / MIB
    print(
        f"uploaded {size_mib:.0f} MiB in {args.part_mib} MiB parts, {args.concurrency} in flight, "
        f"{'http' if args.plain_http else 'https'}: {elapsed:.1f} s ({size_mib / elapsed:.0f} MiB/s)"
    )
    print(
        f"emulator RSS: baseline {baseline / MIB:.1f} MiB, peak {peak_mib:.1f} MiB "
        f"({sampler.samples} samples every 20 ms; goal < {GOAL_MIB} MiB)"
    )
    return 0 if peak_mib < GOAL_MIB else 1


if __name__ == "__main__":
    sys.exit(main())

"""Which default part size? Runs ``gcbulk run`` on the same workload with several part sizes and prints MiB/s.

    python benchmarks/part_size.py [--files 16] [--file-mib 64] [--sizes 8,16,32,64] [--parts-in-flight 16]

The chosen default and the figures behind it are recorded at ``DEFAULT_PART_SIZE`` in engine/upload/context.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import MIB, emulator_process, make_cases, run_gcbulk, write_job  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--file-mib", type=int, default=64)
    parser.add_argument("--sizes", default="8,16,32,64", help="part sizes in MiB")
    parser.add_argument("--parts-in-flight", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.0, help="injected latency per request, seconds")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gcbulk-bench-partsize")
    args = parser.parse_args()
    cases = make_cases(args.workdir / "cases", args.files, 1, args.file_mib * MIB)
    total = sum(f.stat().st_size for _, files in cases for f in files)
    print(
        f"{args.files} files × {args.file_mib} MiB, {args.parts_in_flight} parts in flight, "
        f"{args.latency * 1000:.0f} ms latency per request"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        rates = []
        for _ in range(args.repeat):
            with emulator_process(args.workdir / "emulator") as emulator:
                emulator.set_latency(args.latency)
                job = write_job(
                    args.workdir,
                    emulator,
                    args.workdir / "cases",
                    1,
                    engine=f'part_size = "{size} MiB"\nparts_in_flight = {args.parts_in_flight}\n'
                    f"files_in_flight = {args.files}\n",
                )
                rates.append(total / MIB / run_gcbulk(job, emulator))
        print(
            f"part size {size:>3} MiB: {max(rates):7.1f} MiB/s (best of {args.repeat}: "
            f"{', '.join(f'{r:.1f}' for r in rates)})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

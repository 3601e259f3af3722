"""DICOM at scale: header scan files/s (1 process and a pool) and de-identification files/s and MiB/s.

    python benchmarks/dicom_scan.py                     # 100 000 files (1 000 series × 100 slices of 64×64)
    python benchmarks/dicom_scan.py --files 10000       # a quick run

The tree is generated once (synthetic CT slices written with pydicom, never patient data) and kept in the work folder
between runs. Reference: a fast DICOM sorter reads ~970 files/s (sdcm); goal (issue 12) ≥ 2 000 files/s here.
No emulator is involved: this is the local, CPU-bound part of a DICOM migration.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).parents[1]
sys.path.insert(0, str(REPO))

from gcbulk.engine.dicom.deidentify import stage_sets  # noqa: E402
from gcbulk.engine.dicom.headers import DicomHeader, read_headers  # noqa: E402
from gcbulk.engine.dicom.series import group_series  # noqa: E402
from gcbulk.engine.jobfile import load_job  # noqa: E402
from gcbulk.engine.plan.planner import PlannedCase, plan_tree  # noqa: E402

SLICES = 100


def _series(args: tuple[Path, int]) -> int:
    from tests.imaging import make_dicom_series

    folder, index = args
    if not folder.is_dir():
        make_dicom_series(folder, SLICES, rows=64, columns=64, seed=index)
    return SLICES


def generate(root: Path, files: int) -> list[Path]:
    jobs = [(root / f"study{n:05d}", n) for n in range(max(1, files // SLICES))]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_series, jobs, chunksize=8))
    return sorted(p for folder, _ in jobs for p in folder.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--deid-files", type=int, default=5_000, help="files de-identified (a subset of the tree)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gcbulk-dicom-bench")
    args = parser.parse_args()
    tree = args.workdir / f"tree-{args.files}"
    started = time.perf_counter()
    paths = generate(tree, args.files)
    print(f"tree: {len(paths)} files in {tree} ({time.perf_counter() - started:.1f} s to generate or find)")

    rows = []
    for workers in (1, os.cpu_count() or 1):
        started = time.perf_counter()
        headers = [h for h in read_headers(paths, workers=workers) if isinstance(h, DicomHeader)]
        series = group_series(headers)
        seconds = time.perf_counter() - started
        rows.append(
            (
                f"header scan + series grouping, {workers} process(es)",
                len(paths) / seconds,
                seconds,
                f"{len(series)} series",
            )
        )

    # The same tree through the planner, one case per study folder, with a dicom rule: what `gcbulk plan` does.
    job = args.workdir / "job.toml"
    job.write_text(
        f'reader_study = "bench"\nbase_url = "https://gc.example/api/v1/"\ncase_root = "{tree}"\n\n'
        '[[rules]]\ndicom = { Modality = "CT" }\nsocket = "ct-image"\n'
    )
    started = time.perf_counter()
    planned = sum(isinstance(entry, PlannedCase) for entry in plan_tree(load_job(job)))
    seconds = time.perf_counter() - started
    rows.append(
        (f"plan with a dicom rule, {os.cpu_count()} processes", len(paths) / seconds, seconds, f"{planned} cases")
    )

    subset = paths[: args.deid_files]
    sets = [(f"set{i}", [str(p) for p in subset[i : i + SLICES]]) for i in range(0, len(subset), SLICES)]
    source_bytes = sum(p.stat().st_size for p in subset)
    staging = args.workdir / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    results = list(stage_sets(sets, staging, budget_bytes=2 * 1024**3))
    seconds = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, Exception)]
    rows.append(
        (
            f"de-identification, {os.cpu_count()} processes",
            len(subset) / seconds,
            seconds,
            f"{source_bytes / 1024**2 / seconds:.1f} MiB/s, {len(errors)} errors",
        )
    )
    shutil.rmtree(staging, ignore_errors=True)

    print(f"\n{'step':<52} {'files/s':>9} {'seconds':>8}  notes")
    for step, rate, secs, note in rows:
        print(f"{step:<52} {rate:>9.0f} {secs:>8.1f}  {note}")
    print("\nreference: ~970 files/s (sdcm, a fast DICOM sorter); goal ≥ 2 000 files/s header scan on this machine")


if __name__ == "__main__":
    main()

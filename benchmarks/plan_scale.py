"""Planning at scale: trees of 100 000 and 1 000 000 small files → files/s and peak RSS per size.

    python benchmarks/plan_scale.py                       # 100 000 and 1 000 000 files
    python benchmarks/plan_scale.py --sizes 20000         # a quick run

Each tree has the tutorial's shape plus tiles: per case folder ``ct.mha``, ``seg.mha`` (positional rules) and
``tiles/tile0..7.tif`` (one value, ``group = "all"``), i.e. 10 files per case; no DICOM header is parsed.
Each size is measured in a fresh subprocess, so its peak RSS is its own. The subprocess times two things on the
same, already generated tree:

* ``walk``: the pure planner alone (``plan_tree``: scandir, stat, rules), no ledger;
* ``plan``: what ``gcbulk plan --offline`` does — planner + preflight + **recording every case, item and file in a
  fresh ledger** (SQLite, WAL, synchronous=FULL, one commit per 5 000 files). The goal figure is this one. Since
  issue 24 it includes the hostile-input checks: every MetaImage header read (64 KiB budget) and checked against
  its file's size, a symbolic-link test per file and a real path per case folder, and each new file read once for
  its multipart checksum (the bytes the upload must send).
* ``checked``: the same plan with the socket catalogue known (``gcbulk plan`` online, or ``--sockets FILE``), so the
  server's own checks run too (issue 11): every ``ct.mha`` header read by SimpleITK, every ``seg.mha`` (a
  Segmentation socket with overlay values {0, 1}) read in full and its voxel values checked. The images are real
  (4 × 8 × 8 voxels), so no finding is expected.
* ``re-checked``: that checked plan again, into the same ledger — a second one-shot run over an unchanged tree. Each
  case costs a stat per file, the content checks' results come from the ledger (``content_checks``, issue 31) and so
  do the planner's own header reads (``file_reads``): no file is read.

Goals (issue 4): ≥ 20 000 files/s, peak RSS < 500 MiB and nearly the same for both sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES_PER_CASE = 10
JOB = """reader_study = "bench-study"
base_url = "https://gc.example/api/v1/"
case_root = "cases"

[[rules]]
glob = "tiles/*.tif"
socket = "generic-medical-image"
group = "all"

[[rules]]
position = 1
socket = "ct-image"

[[rules]]
position = 2
socket = "airway-segmentation"
"""


CATALOGUE = {
    "ct-image": {"slug": "ct-image", "kind": "Image", "super_kind": "Image"},
    "airway-segmentation": {
        "slug": "airway-segmentation",
        "kind": "Segmentation",
        "super_kind": "Image",
        "overlay_segments": [{"name": "airway", "voxel_value": 1, "visible": True}],
    },
    "generic-medical-image": {"slug": "generic-medical-image", "kind": "Image", "super_kind": "Image"},
}


def _image_bytes(dtype: str) -> bytes:
    """A real 4 × 8 × 8 .mha (written once; every case gets a copy of its bytes)."""
    import numpy as np
    import SimpleITK as sitk  # noqa: N813

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "image.mha"
        values = (np.arange(256).reshape(4, 8, 8) % (2 if dtype == "uint8" else 200)).astype(dtype)
        sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
        return path.read_bytes()


def generate_tree(directory: Path, files: int) -> None:
    """Write ``files`` small files, 10 per case folder, with raw os calls (the generator must not be the bottleneck)."""
    cases = directory / "cases"
    payload = b"gcbulk-benchmark"
    images = {"ct.mha": _image_bytes("int16"), "seg.mha": _image_bytes("uint8")}
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for case in range(files // FILES_PER_CASE):
        folder = cases / f"case{case:07d}"
        tiles = folder / "tiles"
        os.makedirs(tiles)
        names = [folder / "ct.mha", folder / "seg.mha"] + [tiles / f"tile{n}.tif" for n in range(8)]
        for name in names:
            fd = os.open(name, flags, 0o644)
            os.write(fd, images.get(name.name, payload))
            os.close(fd)
    (directory / "job.toml").write_text(JOB)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(directory: Path) -> dict[str, float]:
    """Run in the child: time the walk alone, then the full plan into a fresh ledger."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gcbulk.engine.jobfile import load_job
    from gcbulk.engine.plan.planner import PlannedCase, plan_tree
    from gcbulk.engine.service.plan_recording import plan_into_ledger
    from gcbulk.state.ledger import Ledger

    config = load_job(directory / "job.toml")
    started = time.perf_counter()
    walked = sum(
        sum(len(item.files) for item in entry.items) for entry in plan_tree(config) if isinstance(entry, PlannedCase)
    )
    walk_seconds = time.perf_counter() - started

    started, cpu_started = time.perf_counter(), time.process_time()
    with Ledger.open(directory / "job.ledger.sqlite", config.binding) as ledger:
        report = plan_into_ledger(config, ledger, catalogue=None)
    plan_seconds, plan_cpu = time.perf_counter() - started, time.process_time() - cpu_started

    started, cpu_started = time.perf_counter(), time.process_time()
    with Ledger.open(directory / "checked.ledger.sqlite", config.binding) as ledger:
        checked = plan_into_ledger(config, ledger, catalogue=CATALOGUE)
    checked_seconds, checked_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert {f.code for f in checked.findings} <= {"quota"}, checked.findings[:3]

    started, cpu_started = time.perf_counter(), time.process_time()
    with Ledger.open(directory / "checked.ledger.sqlite", config.binding) as ledger:
        rechecked = plan_into_ledger(config, ledger, catalogue=CATALOGUE)
    rechecked_seconds, rechecked_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert rechecked.content_files_read == 0, "a re-plan of an unchanged tree read file content"
    assert rechecked.planner_files_read == 0, "a re-plan of an unchanged tree read image headers"
    assert rechecked.content_files_cached == checked.content_files_read
    # The only findings expected are the quota notes (more than 2000 uploads in all).
    assert report.diff.files == walked and {f.code for f in report.findings} <= {"quota"}, report.findings[:3]
    return {
        "files": report.diff.files,
        "cases": report.diff.cases,
        "walk_seconds": walk_seconds,
        "walk_files_per_s": walked / walk_seconds,
        "plan_seconds": plan_seconds,
        "plan_files_per_s": report.diff.files / plan_seconds,
        "plan_cpu_seconds": plan_cpu,
        "checked_seconds": checked_seconds,
        "checked_files_per_s": checked.diff.files / checked_seconds,
        "checked_cpu_seconds": checked_cpu,
        "content_files_read": checked.content_files_read,
        "rechecked_seconds": rechecked_seconds,
        "rechecked_files_per_s": rechecked.diff.files / rechecked_seconds,
        "rechecked_cpu_seconds": rechecked_cpu,
        "peak_rss_mib": peak_rss_mib(),
        "ledger_mib": (directory / "job.ledger.sqlite").stat().st_size / 2**20,
    }


def run_size(files: int, workdir: Path | None, keep: bool) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix=f"plan-scale-{files}-", dir=workdir))
    try:
        started = time.perf_counter()
        generate_tree(directory, files)
        generated = time.perf_counter() - started
        child = subprocess.run([sys.executable, __file__, "--measure", str(directory)], capture_output=True, text=True)
        if child.returncode != 0:
            raise SystemExit(f"measuring {files} files failed:\n{child.stderr}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["generate_seconds"] = generated
        return result
    finally:
        if keep:
            print(f"kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, help="where to generate the trees (default: the temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated trees")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    print(
        f"{'files':>10} {'cases':>8} {'walk files/s':>13} {'plan files/s':>13} {'plan s':>8} {'CPU s':>6} "
        f"{'checked files/s':>16} {'checked s':>10} {'CPU s':>6} {'re-checked files/s':>19} {'re-checked s':>13} "
        f"{'CPU s':>6} {'peak RSS MiB':>13} {'ledger MiB':>11}"
    )
    for size in args.sizes:
        r = run_size(size, args.workdir, args.keep)
        print(
            f"{r['files']:>10} {r['cases']:>8} {r['walk_files_per_s']:>13,.0f} {r['plan_files_per_s']:>13,.0f} "
            f"{r['plan_seconds']:>8.1f} {r['plan_cpu_seconds']:>6.1f} {r['checked_files_per_s']:>16,.0f} "
            f"{r['checked_seconds']:>10.1f} {r['checked_cpu_seconds']:>6.1f} {r['rechecked_files_per_s']:>19,.0f} "
            f"{r['rechecked_seconds']:>13.1f} {r['rechecked_cpu_seconds']:>6.1f} "
            f"{r['peak_rss_mib']:>13.1f} {r['ledger_mib']:>11.1f}",
            flush=True,
        )
    print(
        "plan files/s includes preflight and writing every case, item and file to a fresh ledger "
        "(synchronous=FULL); walk files/s is the pure planner alone; checked: with the server's content checks, "
        "re-checked: the same again over the unchanged tree (content checks and header reads from the ledger, "
        "no file read). "
        "CPU s: the measuring subprocess's, all threads, for that plan alone. Peak RSS is the measuring subprocess's."
    )


if __name__ == "__main__":
    main()

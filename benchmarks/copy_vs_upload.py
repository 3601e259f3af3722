"""A copy without bytes beside the same cases uploaded (issue 27): ``gcbulk copy`` against ``gcbulk run``.

    python benchmarks/copy_vs_upload.py [--cases 1000] [--workdir DIR]

The emulator runs in its own process with its **default profile** (no capacity profile: it answers at once, so the
client and this machine are the limit) and its bundled seed (``example-study``, ``example-archive``; real image
sockets, so every upload is imported by panimg). The cases are the tutorial's shape with small images (CT
``4×32×32`` int16, mask ``4×32×32`` uint8), so the upload row measures the requests and imports per case rather than
the network.

Rows:
* **upload**: ``gcbulk run`` of the cases into ``example-archive`` (an archive job): uploads, items, imports.
* **copy**: ``gcbulk copy`` of that archive into ``example-study``: display sets whose values name the archive's images.

Per row: wall seconds, the client's CPU seconds (its process, start-up included), API requests per case and part PUTs
(the emulator's counters, reset before each row). The load average before and after is printed: the machine is
shared, and other load slows every row.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import Emulator, Timed, emulator_process, run_gcbulk_measured, run_measured  # noqa: E402
from tests.imaging import make_mask, make_mha  # noqa: E402

ARCHIVE, STUDY = "example-archive", "example-study"
SHAPE = (4, 32, 32)


@dataclass(frozen=True)
class Row:
    name: str
    timed: Timed
    cases: int
    api_requests: int
    part_puts: int

    def line(self) -> str:
        return (
            f"| {self.name:<6} | {self.cases:>5} | {self.timed.seconds:>8.1f} | {self.timed.cpu_seconds:>7.1f} | "
            f"{self.api_requests / self.cases:>12.1f} | {self.part_puts:>9} |"
        )


def make_cases(root: Path, cases: int) -> None:
    for n in range(1, cases + 1):
        folder = root / f"patient{n:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "seg.mha").exists():
            make_mha(folder / "ct.mha", SHAPE, seed=n)
            make_mask(folder / "seg.mha", SHAPE, seed=n + 1000)


def write_jobs(directory: Path, emulator: Emulator, case_root: Path) -> tuple[Path, Path]:
    for stale in [*directory.glob("archive-job.*"), *directory.glob("copy.*")]:
        stale.unlink()
    upload = directory / "archive-job.toml"
    upload.write_text(
        f'archive = "{ARCHIVE}"\nbase_url = "{emulator.base_url}"\ncase_root = "{case_root}"\n'
        f'ca_file = "{emulator.ca_file}"\n\n[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n\n'
        '[[rules]]\nglob = "seg.mha"\nsocket = "airway-segmentation"\n\n[engine]\nfiles_in_flight = 16\n'
    )
    copy = directory / "copy.toml"
    copy.write_text(
        f'base_url = "{emulator.base_url}"\nca_file = "{emulator.ca_file}"\n'
        f'from = "archive:{ARCHIVE}"\nto = "reader-study:{STUDY}"\n'
    )
    return upload, copy


def counted(emulator: Emulator) -> tuple[int, int]:
    counters = emulator.admin("GET", "counters")
    api = sum(n for name, n in counters["requests"].items() if " api:" in name)
    puts = sum(sum(parts.values()) for parts in counters["part_put_attempts"].values())
    return api, puts


def measure(cases: int, workdir: Path) -> list[Row]:
    case_root = workdir / "cases"
    make_cases(case_root, cases)
    rows = []
    with emulator_process(workdir / "emulator", seed=None) as emulator:
        upload_job, copy_job = write_jobs(workdir, emulator, case_root)
        emulator.admin("DELETE", "counters")
        uploaded = run_gcbulk_measured(upload_job, emulator)
        rows.append(Row("upload", uploaded, cases, *counted(emulator)))
        emulator.admin("DELETE", "counters")
        copied = run_measured("gcbulk copy", ["-m", "gcbulk", "copy", str(copy_job)], emulator)
        rows.append(Row("copy", copied, cases, *counted(emulator)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="how many tutorial cases (default 1000)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gcbulk-bench-copy")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    before = os.getloadavg()
    rows = measure(args.cases, args.workdir)
    after = os.getloadavg()
    print(
        f"emulator: default profile, bundled seed; {os.cpu_count()} cores; load average {before[0]:.2f} → {after[0]:.2f}"
    )
    print("| row    | cases |   wall s |   cpu s | API req/case | part PUTs |")
    print("|--------|-------|----------|---------|--------------|-----------|")
    for row in rows:
        print(row.line())
    copy = rows[1]
    if copy.part_puts:
        print(f"FAIL: the copy sent {copy.part_puts} part PUT(s); it must send none")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

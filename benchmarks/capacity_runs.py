"""R1–R3 (issue 16): the tutorial's cases with real imports, against the emulator's capacity profile
(``--profile real``: two web workers with docs/gc-api.md §10's service times, two import workers with build time per MiB
and the display-set lock contention). Run by ``benchmarks/compare_gcapi.py``, printed with W1–W3.

* R1: cases × (CT ``.mha`` 2 MiB + airway mask ``.mha`` 0.5 MiB, voxels {0, 1}); wall time until every image is in
  its display set. gcapi 0.16.1 as the tutorial drives it (one ``add_case_to_reader_study`` per case), then a poll of
  each display set until both images are in place. gcbulk: ``gcbulk run`` (plan, uploads, imports, all waited for).
  Also gcbulk with ``stagger_image_values = false``: what staggering a case's images is worth.
* R2: R1 with 100 ms added to every request (a remote site).
* R3: gcbulk with fixed concurrency (``adaptive_concurrency = false``, API calls in flight 2 / 4 / 8 / 16) against
  the adaptive limiter (bound 16), on R1's cases.

Per client, from the emulator's counters (``GET /_admin/counters``): API requests per case, server busy seconds per
case (API workers + import workers), and the p90 of each API request's time in the server over its work alone.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import MIB, Emulator, Timed, emulator_process, run_gcapi_measured, run_gcbulk_measured
from gcbulk.emulator.capacity import CapacityProfile
from gcbulk.emulator.context import EmulatorConfig
from tests.imaging import make_mask, make_mha

log = logging.getLogger("benchmarks.capacity")

CT_SHAPE = (16, 256, 256)  # int16: 2 MiB of voxels
MASK_SHAPE = (8, 256, 256)  # uint8: 0.5 MiB of voxels
SOCKETS = (("ct.mha", "ct-image"), ("seg.mha", "airway-segmentation"))  # as gcapi_clients.TUTORIAL_SOCKETS
STUDY = "example-study"  # the emulator's bundled seed: ct-image and airway-segmentation (overlay {0, 1})
# Enough cases in flight that uploads of the next cases overlap the imports of earlier ones.
ENGINE = "files_in_flight = 16\n"
SWEEP = (2, 4, 8, 16)


@dataclass(frozen=True)
class RWorkload:
    name: str
    cases: int
    latency: float
    goal_vs_gcapi: float | None

    def describe(self) -> str:
        latency = f", {self.latency * 1000:.0f} ms latency" if self.latency else ""
        return f"{self.cases} cases × (CT 2 MiB + mask 0.5 MiB), real imports, --profile real{latency}"


@dataclass
class Measured:
    """One client's run: wall and CPU time, and what the server's counters say it cost."""

    timed: Timed
    cases: int
    bytes: int
    requests_per_case: float = 0.0
    api_busy_per_case: float = 0.0
    import_busy_per_case: float = 0.0
    latency_ratio_p90: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def busy_per_case(self) -> float:
        return self.api_busy_per_case + self.import_busy_per_case

    @property
    def cpu_per_gib(self) -> float:
        return self.timed.cpu_seconds / (self.bytes / 1024**3)

    def read_counters(self, emulator: Emulator, breakdown: Path | None = None) -> Measured:
        """Reads the emulator's counters; ``breakdown``: also write the requests and busy seconds per endpoint there
        (JSON), the figures of ``benchmarks/README.md``'s per-request table."""
        counters = emulator.admin("GET", "counters")
        api = {name: n for name, n in counters["requests"].items() if " api:" in name}
        if breakdown is not None:
            per_endpoint = {"cases": self.cases, "requests": api, "busy_seconds": counters["busy_seconds"]}
            breakdown.write_text(json.dumps(per_endpoint, indent=1, sort_keys=True))
        self.requests_per_case = sum(api.values()) / self.cases
        self.api_busy_per_case = sum(counters["busy_seconds"].values()) / self.cases
        self.import_busy_per_case = counters["import_busy_seconds"] / self.cases
        self.latency_ratio_p90 = (counters["api_latency_ratio"] or {}).get("p90", 0.0)
        return self


def make_tutorial_cases(root: Path, cases: int) -> list[tuple[str, list[Path]]]:
    """``root/patientNNNN/{ct,seg}.mha`` (written once, reused by later runs)."""
    layout = []
    for n in range(cases):
        folder = root / f"patient{n:04d}"
        ct, seg = folder / "ct.mha", folder / "seg.mha"
        if not ct.exists():
            make_mha(ct, CT_SHAPE, seed=n)
        if not seg.exists():
            make_mask(seg, MASK_SHAPE, seed=n + 7)
        layout.append((folder.name, [ct, seg]))
    return layout


def import_floor_seconds(layout: list[tuple[str, list[Path]]]) -> float:
    """The profile's import work divided by its import workers: build + link of every image, never contended —
    the least time in which this server can import them all."""
    profile, config = CapacityProfile(), EmulatorConfig(data_dir=Path("."))
    per_image = [
        profile.build_seconds(path.stat().st_size) + profile.link_seconds + config.link_delay_seconds
        for _, files in layout
        for path in files
    ]
    return sum(per_image) / profile.import_workers


def write_tutorial_job(directory: Path, emulator: Emulator, case_root: Path, engine: str) -> Path:
    rules = "".join(f'[[rules]]\nglob = "{glob}"\nsocket = "{slug}"\n\n' for glob, slug in SOCKETS)
    job = directory / "tutorial-job.toml"
    job.write_text(
        f'reader_study = "{STUDY}"\nbase_url = "{emulator.base_url}"\ncase_root = "{case_root}"\n'
        f'ca_file = "{emulator.ca_file}"\n\n{rules}[engine]\n{ENGINE}{engine}'
    )
    for stale in directory.glob("tutorial-job.ledger.sqlite*"):
        stale.unlink()
    (directory / "tutorial-job.events.jsonl").unlink(missing_ok=True)
    return job


def measure(
    client: str, workdir: Path, layout: list[tuple[str, list[Path]]], latency: float, engine: str = ""
) -> Measured:
    """One client on a fresh emulator with the capacity profile; ``client`` is ``gcapi`` or ``gcbulk``."""
    total = sum(path.stat().st_size for _, files in layout for path in files)
    with emulator_process(workdir / "emulator", profile="real", seed=None) as emulator:
        emulator.set_latency(latency)
        if client == "gcapi":
            timed = run_gcapi_measured("tutorial", emulator, STUDY, layout, workdir)
        else:
            job = write_tutorial_job(workdir, emulator, layout[0][1][0].parent.parent, engine)
            timed = run_gcbulk_measured(job, emulator)
        variant = re.sub(r"[^a-z0-9]+", "-", engine.lower()).strip("-")  # e.g. gcbulk-stagger-image-values-false
        breakdown = workdir / f"{client}{'-' + variant if variant else ''}-requests.json"
        return Measured(timed, len(layout), total).read_counters(emulator, breakdown)


def run_capacity_workloads(names: list[str], scale: float, workdir: Path) -> dict[str, dict[str, Measured]]:
    """Every chosen R workload: label → Measured, printed as it goes."""
    cases = max(4, round(200 * scale))
    layout = make_tutorial_cases(workdir / f"tutorial-{cases}", cases)
    mib = sum(p.stat().st_size for _, files in layout for p in files) / MIB
    results: dict[str, dict[str, Measured]] = {}
    runs: dict[str, list[tuple[str, str, str, float]]] = {
        "R1": [
            ("gcbulk", "gcbulk", "", 0.0),
            ("gcapi", "gcapi", "", 0.0),
            ("gcbulk, stagger off", "gcbulk", "stagger_image_values = false\n", 0.0),
        ],
        "R2": [("gcbulk", "gcbulk", "", 0.1), ("gcapi", "gcapi", "", 0.1)],
        "R3": [
            (f"fixed {n}", "gcbulk", f"adaptive_concurrency = false\napi_calls_in_flight = {n}\n", 0.0) for n in SWEEP
        ]
        + [("adaptive", "gcbulk", "", 0.0)],
    }
    for name in names:
        print(f"{name}: {cases} cases, {mib:.0f} MiB, floor {import_floor_seconds(layout):.1f} s", flush=True)
        results[name] = {}
        for label, client, engine, latency in runs[name]:
            if name == "R3" and label == "adaptive" and "R1" in results:
                results[name][label] = results["R1"]["gcbulk"]  # the same run: R1's gcbulk is the adaptive one
            else:
                results[name][label] = measure(client, workdir, layout, latency, engine)
            m = results[name][label]
            print(
                f"  {label:20s} {m.timed.seconds:7.1f} s  {m.requests_per_case:5.1f} req/case  "
                f"busy {m.api_busy_per_case:5.2f} + {m.import_busy_per_case:5.2f} s/case  "
                f"p90 ×{m.latency_ratio_p90:.2f}  cpu {m.cpu_per_gib:5.1f} s/GiB",
                flush=True,
            )
    for measured in results.values():
        for m in measured.values():
            m.extra["floor"] = import_floor_seconds(layout)
    return results

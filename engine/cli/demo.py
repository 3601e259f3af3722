"""``gcbulk demo``: a real migration end to end, on this machine, in a few seconds.

It writes a small case tree shaped like Grand Challenge's reader-study tutorial (one folder per patient, each with a
CT image and an airway segmentation, as real ``.mha`` files), starts the bundled emulator of Grand Challenge on
loopback, writes a job file for it, and runs the same code path as ``gcbulk run``. Then it shows the display sets
the emulator holds and where the ledger and the event log are. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from gcbulk.extras import EMULATOR

HELP = "Run a small migration end to end against the bundled Grand Challenge emulator."

# The demo's world is emulator/example.toml: its editor owns the tutorial-shaped study "example-study".
DEMO_USER = "editor"
# Where the emulator's own log lines come from: its modules, and panimg, which it runs for every import.
EMULATOR_LOGGERS = ("gcbulk.emulator", "panimg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", type=int, default=5, help="how many patient folders to generate (default 5)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "gcbulk-demo",
        help="where the cases, job file, ledger and logs go (default: gcbulk-demo in the system's "
        f"temp folder, {Path(tempfile.gettempdir()) / 'gcbulk-demo'})",
    )
    parser.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="serve /metrics, /healthz and /readyz here during the demo, or 'off' (env "
        "GCBULK_METRICS_ADDRESS; default 127.0.0.1:9464, skipped with a warning when taken)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show the emulator's own log lines (its requests, panimg's image conversions); by default the "
        "demo shows gcbulk's progress and results, and only the emulator's warnings",
    )
    parser.add_argument(
        "--generate-only",
        action="store_true",
        help="only write the case tree under WORKDIR/cases, adding the patient folders that are "
        "missing, and exit (the docker compose demo's one-shot service)",
    )


def write_case_tree(root: Path, cases: int, *, missing_only: bool = False) -> list[int]:
    """Patient folders with a CT image (int16) and an airway segmentation (uint8), 32×64×64 voxels each. Returns the
    numbers written; ``missing_only`` leaves existing folders as they are (a run may be reading them)."""
    import numpy as np
    import SimpleITK as sitk

    written = []
    for n in range(1, cases + 1):
        if missing_only and (root / f"patient{n:03d}").is_dir():
            continue
        written.append(n)
        folder = root / f"patient{n:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        zz, yy, xx = np.mgrid[0:32, 0:64, 0:64]
        body = ((yy - 32) ** 2 + (xx - 32) ** 2 < 28**2).astype(np.int16)
        airway = ((yy - 30 - n % 5) ** 2 + (xx - 32) ** 2 < 4**2) & (zz > 4)
        ct = sitk.GetImageFromArray((body * 40 - 1000 + airway * -900 + (zz + n) % 7).astype(np.int16))
        seg = sitk.GetImageFromArray(airway.astype(np.uint8))
        for image in (ct, seg):
            image.SetSpacing((0.7, 0.7, 1.25))
        sitk.WriteImage(ct, str(folder / "1-ct.mha"), useCompression=True)
        sitk.WriteImage(seg, str(folder / "2-airway.mha"), useCompression=True)
    return written


def write_job_file(workdir: Path, base_url: str, ca_file: Path | None) -> Path:
    job = workdir / "job.toml"
    job.write_text(
        "# Written by 'gcbulk demo' for the bundled emulator; the README's 'job file' section shows one for a real "
        "server.\n"
        f'reader_study = "example-study"\nbase_url = "{base_url}"\ncase_root = "cases"\n'
        + (f'ca_file = "{ca_file}"\n' if ca_file is not None else "")
        + "\n"
        '[[rules]]\nglob = "*-ct.mha"\nsocket = "ct-image"\n\n'
        '[[rules]]\nglob = "*-airway.mha"\nsocket = "airway-segmentation"\n\n'
        "[engine]\nfiles_in_flight = 8\nparts_in_flight = 16\n"
    )
    return job


def run(args: argparse.Namespace) -> int:
    from gcbulk.engine.cli import run as run_command
    from gcbulk.engine.jobfile import TOKEN_ENV
    from gcbulk.exit_codes import EXIT_CONFIG_ERROR, EXIT_OK

    if args.cases < 1:
        print("gcbulk demo: --cases must be at least 1", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    workdir = args.workdir.absolute()
    cases = workdir / "cases"
    if getattr(args, "generate_only", False):
        written = write_case_tree(cases, args.cases, missing_only=True)
        print(
            f"gcbulk demo: wrote {len(written)} tutorial-shaped case(s) under {cases} ({args.cases} in all)",
            file=sys.stderr,
        )
        return EXIT_OK
    # Writing cases needs only the base install (the compose demo's one-shot service); serving them needs the emulator.
    missing = EMULATOR.install_hint("the demo runs the bundled Grand Challenge emulator, which")
    if missing:
        print(f"gcbulk demo: {missing}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    from gcbulk.emulator.context import EmulatorConfig
    from gcbulk.emulator.server import emulator_in_thread

    if not cases.is_dir() or sum(1 for _ in cases.iterdir()) != args.cases:
        shutil.rmtree(cases, ignore_errors=True)
        write_case_tree(cases, args.cases)
        print(f"gcbulk demo: wrote {args.cases} tutorial-shaped cases under {cases}", file=sys.stderr)
    # The emulator forgets everything when it stops, so each demo starts a fresh ledger against it.
    for stale in (
        "job.ledger.sqlite",
        "job.ledger.sqlite-wal",
        "job.ledger.sqlite-shm",
        "job.ledger.sqlite.lock",
        "job.events.jsonl",
    ):
        (workdir / stale).unlink(missing_ok=True)
    shutil.rmtree(workdir / "emulator", ignore_errors=True)

    if not getattr(args, "verbose", False):
        # The emulator stands in for the server: its lines (panimg converting each image) are not what the demo
        # shows. Levels on its loggers survive the run's logging set-up, which configures the root and gcbulk.engine.
        for emulator_logger in EMULATOR_LOGGERS:
            logging.getLogger(emulator_logger).setLevel(logging.WARNING)
    with emulator_in_thread(EmulatorConfig(data_dir=workdir / "emulator", import_delay_seconds=0.1)) as emulator:
        print(f"gcbulk demo: Grand Challenge emulator at {emulator.base_url}", file=sys.stderr)
        job = write_job_file(workdir, emulator.base_url, emulator.ca_file)
        # The token of the emulator's demo editor, for this process only: the job file never holds a token.
        os.environ[TOKEN_ENV] = emulator.tokens[DEMO_USER]
        run_args = argparse.Namespace(
            job=job,
            ledger=None,
            events=None,
            token_file=None,
            replan=False,
            drain=30.0,
            progress_interval=2.0,
            metrics_address=args.metrics_address,
        )
        code = run_command.run(run_args)
        store = emulator.context.store
        print("\nDisplay sets in the emulator's reader study 'example-study':")
        for display_set in sorted(store.display_sets.values(), key=lambda ds: ds.order):
            values = ", ".join(
                f"{slug} → image {store.images[v.image_pk].name} {store.images[v.image_pk].shape}"
                for slug, v in sorted(display_set.values.items())
                if v.image_pk in store.images
            )
            print(f"  {display_set.title} (order {display_set.order}): {values}")
    print(
        f"\nJob file:  {job}\nLedger:    {run_command.default_ledger_path(job)}"
        f"  (inspect with: sqlite-utils tables {run_command.default_ledger_path(job)} --counts)\n"
        f"Event log: {run_command.events_path_for(job)}\n"
        "Run it against Grand Challenge: copy the job file, set base_url to https://grand-challenge.org/api/v1/, "
        f"drop ca_file, set reader_study to your study's slug and {TOKEN_ENV} to your API token."
    )
    return code

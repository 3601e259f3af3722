"""Export at scale: 100 000 answers and 1 000 masks from the emulator; wall time and peak RSS of the exporter.

    python benchmarks/export_scale.py [--answers 100000] [--masks 1000] [--work-dir DIR]
    python benchmarks/export_scale.py --answers 30 --masks 2      # a quick run (the smoke test's)

Three processes, so that the exporter's memory is its own: this script; the emulator (``serve`` role), seeded in its
own process — 1 000 Mask answers through the admin helper ``gcbulk.emulator.admin_answers.create_answer`` (each imports its
own image), the other answers built directly as the helper would (its duplicate check scans every answer, which is
quadratic at 100 000); and ``gcbulk export`` as a child process, whose peak RSS comes from ``os.wait4``. The export
runs twice: a full export, then an incremental rerun with nothing changed. Goal: peak RSS < 300 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import child_environment  # noqa: E402

STUDY = "example-study"
READERS = ("reader1", "reader2")
RSS_GOAL_MIB = 300


async def seed(context, answers: int, masks: int, work: Path) -> dict[str, int]:  # noqa: ANN001 - emulator Context
    import numpy as np
    import SimpleITK as sitk

    from gcbulk.emulator.admin_answers import create_answer
    from gcbulk.emulator.answer_types import NON_ANSWERABLE_TYPES, example_answer
    from gcbulk.emulator.store import Answer, DisplaySet, SocketValue, new_uuid

    store = context.store
    study = store.reader_study_by_slug(STUDY)
    questions = [
        store.questions[pk] for pk in study.question_pks if store.questions[pk].answer_type not in NON_ANSWERABLE_TYPES
    ]
    mask_question = next(q for q in questions if q.answer_type == "Mask")
    others = [q for q in questions if q is not mask_question]
    users = [store.user_by_username(name) for name in READERS]
    per_case = len(users) * len(others)
    cases = -(-(answers - masks) // per_case)
    display_sets = []
    for index in range(cases):
        display_set = DisplaySet(
            pk=new_uuid(),
            reader_study_pk=study.pk,
            title=f"case-{index:06d}",
            order=10 * (index + 1),
            created=context.clock.now(),
        )
        display_set.values["patient-age"] = SocketValue(
            pk=store.next_int_pk(), socket_slug="patient-age", value=20 + index % 70
        )
        store.display_sets[display_set.pk] = display_set
        display_sets.append(display_set)

    mask_dir = work / "mask-sources"
    mask_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for index in range(masks):
        path = mask_dir / f"mask-{index}.mha"
        pixels = (rng.random((16, 64, 64)) > 0.7).astype(np.uint8)  # a blobby binary mask: compresses like real ones
        sitk.WriteImage(sitk.GetImageFromArray(pixels), str(path))
        display_set = display_sets[index // len(users) % len(display_sets)]
        await create_answer(
            context,
            creator=READERS[index % len(users)],
            question_pk=mask_question.pk,
            display_set_pk=display_set.pk,
            mask_file=path,
        )
        path.unlink()

    created = masks
    now = context.clock.now()
    for variant, display_set in enumerate(display_sets):
        for user in users:
            for question in others:
                if created >= answers:
                    break
                answer = Answer(
                    pk=new_uuid(),
                    creator=user,
                    question_pk=question.pk,
                    display_set_pk=display_set.pk,
                    answer=example_answer(question, variant),
                    created=now,
                    modified=now,
                )
                store.answers[answer.pk] = answer
                created += 1
    return {"display_sets": len(display_sets), "answers": len(store.answers), "masks": masks}


async def serve(args: argparse.Namespace) -> None:
    from gcbulk.emulator.context import EmulatorConfig
    from gcbulk.emulator.server import run_emulator

    work = Path(args.work_dir)
    config = EmulatorConfig(data_dir=work / "emulator", import_delay_seconds=0.0)
    async with run_emulator(config) as running:
        started = time.monotonic()
        counts = await seed(running.context, args.answers, args.masks, work)
        info = {
            "base_url": running.base_url,
            "ca_file": str(running.ca_file),
            "token": running.tokens["editor"],
            "seed_seconds": round(time.monotonic() - started, 1),
            **counts,
        }
        (work / "emulator.json.partial").write_text(json.dumps(info))
        os.replace(work / "emulator.json.partial", work / "emulator.json")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


def run_export(info: dict, out: Path) -> tuple[float, float, int, str]:
    """Runs ``gcbulk export`` as a child; returns wall seconds, peak RSS in MiB, exit code and its output."""
    env = child_environment(GRAND_CHALLENGE_AUTHORIZATION=info["token"])  # with bytecode caches, as installed
    command = [
        sys.executable,
        "-m",
        "gcbulk",  # the installed command's entry point, whatever module holds the CLI
        "export",
        "--reader-study",
        STUDY,
        "--out",
        str(out),
        "--base-url",
        info["base_url"],
        "--ca-file",
        info["ca_file"],
    ]
    log = out.parent / f"{out.name}.log"
    started = time.monotonic()
    with log.open("a") as sink:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, child.returncode, log.read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="bench", choices=("bench", "serve"))
    parser.add_argument("--answers", type=int, default=100_000)
    parser.add_argument("--masks", type=int, default=1_000)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    if args.role == "serve":
        asyncio.run(serve(args))
        return 0

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gcbulk-export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "emulator.json").unlink(missing_ok=True)
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "serve",
            "--answers",
            str(args.answers),
            "--masks",
            str(args.masks),
            "--work-dir",
            str(work),
        ],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 3600
        while not (work / "emulator.json").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                print("the emulator did not start (see its output above)", file=sys.stderr)
                return 2
            time.sleep(0.5)  # waiting for another process to seed, not for an event in this one
        info = json.loads((work / "emulator.json").read_text())
        print(
            f"seeded {info['answers']} answers ({info['masks']} with masks) on {info['display_sets']} display sets "
            f"in {info['seed_seconds']} s"
        )
        out = work / "export"
        results = {}
        for name in ("full export", "rerun, nothing changed"):
            wall, rss, code, output = run_export(info, out)
            results[name] = (wall, rss, code)
            print(f"{name}: {wall:.1f} s wall, peak RSS {rss:.0f} MiB, exit {code}")
            if code != 0:
                print(output[-3000:])
                return 1
        with (out / "answers.csv").open(encoding="utf-8", newline="") as handle:
            rows = sum(1 for _ in csv.reader(handle)) - 1
        masks = sum(1 for _ in (out / "masks").rglob("*.mha"))
        print(f"answers.csv rows: {rows}; mask files: {masks}")
        peak = max(rss for _, rss, _ in results.values())
        verdict = "meets" if peak < RSS_GOAL_MIB else "MISSES"
        print(f"peak RSS {peak:.0f} MiB {verdict} the goal of < {RSS_GOAL_MIB} MiB")
        return 0 if rows == info["answers"] and masks == info["masks"] and peak < RSS_GOAL_MIB else 1
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())

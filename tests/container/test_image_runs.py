"""The image, built from a clean checkout with the machine's container engine, runs: ``gcbulk --help``, and
``gcbulk run --follow`` against an emulator on this machine's loopback, uploading every case, logging JSON, answering
``/healthz`` and exiting 0 on SIGTERM (``docker stop``).

Marked ``container`` and left out of the default run (the build takes minutes): ``pytest -m container``. Skipped,
saying why, where neither docker nor podman can run a container.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gcbulk.emulator.context import EmulatorConfig
from gcbulk.emulator.server import emulator_in_thread, free_port
from gcbulk.engine.cli.demo import DEMO_USER, write_case_tree
from gcbulk.engine.jobfile import TOKEN_ENV
from gcbulk.state.ledger import Ledger
from tests.container.gcbulk_process import http_get, poll
from tests.container.test_build_context import copy_clean_checkout

pytestmark = pytest.mark.container

BUILD_SECONDS = 1800
CASES = 3


BASE_IMAGE = "python:3.11-slim"  # the Dockerfile's FROM


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]


def container_engine() -> tuple[str | None, str]:
    """The first of docker and podman that has (or can pull) the base image and runs a container from it, or None and
    why neither can: an engine without a daemon, a machine that reaches no registry, a sandbox that forbids
    containers."""
    reasons = []
    for name in ("docker", "podman"):
        path = shutil.which(name)
        if path is None:
            reasons.append(f"{name} is not installed")
            continue
        info = subprocess.run([path, "info"], capture_output=True, text=True, timeout=60)
        if info.returncode != 0:
            reasons.append(f"{name} is installed but does not answer ({_last_line(info)})")
            continue
        present = subprocess.run([path, "image", "inspect", BASE_IMAGE], capture_output=True, text=True, timeout=60)
        if present.returncode != 0:
            pulled = subprocess.run([path, "pull", BASE_IMAGE], capture_output=True, text=True, timeout=600)
            if pulled.returncode != 0:
                reasons.append(f"{name} has no {BASE_IMAGE} and cannot pull it ({_last_line(pulled)})")
                continue
        ran = subprocess.run(
            [path, "run", "--rm", BASE_IMAGE, "python", "-c", "pass"], capture_output=True, text=True, timeout=300
        )
        if ran.returncode != 0:
            reasons.append(f"{name} cannot run a container here ({_last_line(ran)})")
            continue
        return path, ""
    return None, "; ".join(reasons)


@pytest.fixture(scope="module")
def engine() -> str:
    path, why = container_engine()
    if path is None:
        pytest.skip(f"no container engine to build and run the image: {why}")
    return path


@pytest.fixture(scope="module")
def image(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The default target (gcbulk), built from the repository's committed files only."""
    checkout = copy_clean_checkout(tmp_path_factory.mktemp("checkout"))
    tag = f"gcbulk-test:{uuid.uuid4().hex[:12]}"
    # Podman's default (OCI) image format has no HEALTHCHECK; the docker format keeps it.
    format_docker = ["--format", "docker"] if Path(engine).name == "podman" else []
    built = subprocess.run(
        [engine, "build", *format_docker, "--target", "gcbulk", "-t", tag, "."],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS,
    )
    assert built.returncode == 0, f"the image does not build from a clean checkout:\n{built.stderr[-4000:]}"
    size = subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True, timeout=60
    )
    print(f"image {tag}: {int(size.stdout.strip() or 0) / 1e6:.0f} MB")
    yield tag
    subprocess.run([engine, "rmi", "-f", tag], capture_output=True, timeout=120)


def test_the_image_runs_gcbulk_help(engine: str, image: str) -> None:
    shown = subprocess.run([engine, "run", "--rm", image, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "usage: gcbulk" in shown.stdout and "run" in shown.stdout


def test_the_image_runs_follow_mode_against_the_emulator_and_stops_cleanly(
    engine: str, image: str, tmp_path: Path
) -> None:
    cases, state, tls = tmp_path / "cases", tmp_path / "state", tmp_path / "tls"
    write_case_tree(cases, CASES)
    state.mkdir()
    metrics_port = free_port()
    name = f"gcbulk-test-{uuid.uuid4().hex[:12]}"
    with emulator_in_thread(EmulatorConfig(data_dir=tmp_path / "emulator", import_delay_seconds=0.1)) as emulator:
        tls.mkdir()
        shutil.copy(emulator.ca_file, tls / "ca.pem")
        job = tmp_path / "job.toml"
        job.write_text(
            f'reader_study = "example-study"\nbase_url = "{emulator.base_url}"\ncase_root = "/data/cases"\n'
            'ca_file = "/etc/gcbulk/tls/ca.pem"\n\n'
            '[[rules]]\nglob = "*-ct.mha"\nsocket = "ct-image"\n\n'
            '[[rules]]\nglob = "*-airway.mha"\nsocket = "airway-segmentation"\n'
        )
        # The host's network: the emulator listens on this machine's 127.0.0.1 only. This user's uid, so the
        # ledger on the mounted folder is readable here afterwards.
        started = subprocess.run(
            [
                engine,
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "host",
                "--user",
                f"{os.getuid()}:{os.getgid()}",
                "-e",
                f"{TOKEN_ENV}={emulator.tokens[DEMO_USER]}",
                "-e",
                f"GCBULK_METRICS_ADDRESS=127.0.0.1:{metrics_port}",
                "-e",
                "GCBULK_POLL_INTERVAL=2",
                "-v",
                f"{cases}:/data/cases:ro",
                "-v",
                f"{state}:/var/lib/gcbulk",
                "-v",
                f"{tls}:/etc/gcbulk/tls:ro",
                "-v",
                f"{job}:/etc/gcbulk/job.toml:ro",
                image,
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode == 0, started.stderr
        try:
            poll(
                lambda: http_get(f"http://127.0.0.1:{metrics_port}/healthz")[0] == 200,
                timeout=120,
                what="/healthz of gcbulk in the container",
                interval=1.0,
            )

            def done() -> bool:
                ledger_file = state / "job.ledger.sqlite"
                if not ledger_file.exists():
                    return False
                with Ledger.open_readonly(ledger_file) as ledger:
                    return ledger.counts_by_state()["case"] == {"done": CASES}

            poll(done, timeout=300, what=f"{CASES} cases done in the container's ledger", interval=1.0)
            store = emulator.context.store
            titled = {ds.title: ds for ds in store.display_sets.values()}
            assert {f"patient{n:03d}" for n in range(1, CASES + 1)} <= set(titled)
            assert all(len(ds.values) == 2 for title, ds in titled.items() if title.startswith("patient"))

            stopped = subprocess.run([engine, "stop", "--time", "45", name], capture_output=True, timeout=120)
            assert stopped.returncode == 0
            waited = subprocess.run([engine, "wait", name], capture_output=True, text=True, timeout=120)
            assert waited.stdout.strip() == "0", "gcbulk run --follow does not exit 0 on SIGTERM"
            logs = subprocess.run([engine, "logs", name], capture_output=True, text=True, timeout=60)
            events = [json.loads(line) for line in logs.stdout.splitlines() if line.startswith("{")]
            assert events and all("event" in event for event in events)
            assert emulator.tokens[DEMO_USER] not in logs.stdout + logs.stderr
        finally:
            subprocess.run([engine, "rm", "-f", name], capture_output=True, timeout=120)

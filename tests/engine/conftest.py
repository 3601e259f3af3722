"""Fixtures and helpers of the engine tests: a client for the seeded editor, fast retries, tutorial-shaped case
trees, job files, plans, and an in-process run of the engine."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.cli import main
from gcbulk.engine.gc.client import (
    GrandChallengeClient,
    display_set_title,
    socket_slug_of,
)
from gcbulk.engine.gc.retry import RetryPolicy
from gcbulk.engine.jobfile import JobConfig, load_job
from gcbulk.engine.plan.planner import PlannedCase, plan_tree
from gcbulk.engine.upload.crashpoints import ENV_VAR
from gcbulk.engine.upload.journal import Journal, LedgerRunner
from gcbulk.engine.upload.progress import EventLog
from gcbulk.engine.upload.transfer import RunOutcome, TransferEngine
from gcbulk.engine.upload.transfer_settings import TransferSettings
from gcbulk.state.ledger import Ledger, default_ledger_path
from gcbulk.state.replan import planning
from tests.imaging import make_mask, make_mha

# Retries in tests wait (almost) nothing: the behaviour is what matters, not the pacing.
FAST_RETRIES = RetryPolicy(
    base_delay=0.01,
    max_delay=0.05,
    attempts_per_item=8,
    upload_cap_delay=0.05,
    upload_quota_delay=0.05,
    max_retry_after=0.2,
)


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[GrandChallengeClient]:
    async with GrandChallengeClient(
        base_url=emulator.base_url,
        token=emulator.tokens["editor"],
        ca_file=emulator.ca_file,
        retry_policy=FAST_RETRIES,
    ) as gc:
        yield gc


# ---- case trees, job files and plans ------------------------------------------------------------------------------


def make_tutorial_tree(root: Path, cases: int, *, shape: tuple[int, ...] = (4, 8, 8)) -> Path:
    """The tutorial's layout: one folder per patient with a CT image and an airway segmentation."""
    for n in range(1, cases + 1):
        folder = root / f"patient{n}"
        folder.mkdir(parents=True, exist_ok=True)
        make_mha(folder / "ct.mha", shape, seed=n)
        make_mask(folder / "seg.mha", shape, seed=n + 1000)
    return root


def write_job(
    directory: Path, emulator: RunningEmulator, *, rules: str | None = None, engine: str = "", values: str = ""
) -> Path:
    """A job file for the tree at ``directory/cases`` against ``emulator``."""
    rules = (
        rules
        if rules is not None
        else (
            '[[rules]]\nposition = 1\nsocket = "ct-image"\n\n[[rules]]\nposition = 2\nsocket = "airway-segmentation"\n'
        )
    )
    text = (
        f'reader_study = "example-study"\nbase_url = "{emulator.base_url}"\ncase_root = "cases"\n'
        f'ca_file = "{emulator.ca_file}"\n\n{rules}\n{values}\n[engine]\n{engine}\n'
    )
    job_file = directory / "job.toml"
    job_file.write_text(text)
    return job_file


def plan_offline(job: JobConfig) -> Path:
    """Records the plan of ``job`` in its ledger (no socket catalogue: the engine asks the server for kinds)."""
    path = default_ledger_path(job.job_file)
    with Ledger.open(path, job.binding, job_file=job.job_file) as ledger:
        with planning(ledger, rules=job.rules_dict(), job_file=job.job_file) as plan:
            for entry in plan_tree(job):
                if isinstance(entry, PlannedCase):
                    plan.add(entry)
            plan.finish()
    return path


def load_and_plan(job_file: Path) -> JobConfig:
    job = load_job(job_file)
    plan_offline(job)
    return job


# ---- running the engine in-process --------------------------------------------------------------------------------

FAST_ENGINE = TransferSettings(
    retry=FAST_RETRIES,
    poll_initial_seconds=0.02,
    poll_max_seconds=0.1,
    session_scan_interval_seconds=0.05,
    progress_interval_seconds=0.5,
)


async def run_job(
    job_file: Path,
    emulator: RunningEmulator,
    config: TransferSettings = FAST_ENGINE,
    *,
    replan: bool = True,
    user: str = "editor",
) -> RunOutcome:
    """Plans (unless ``replan`` is False) and runs the job in-process as ``user``, as ``gcbulk run`` does."""
    job = load_and_plan(job_file) if replan else load_job(job_file)
    events = EventLog(job_file.with_name("events.jsonl"))
    try:
        async with LedgerRunner(default_ledger_path(job.job_file), job.binding) as runner:
            async with GrandChallengeClient(
                base_url=emulator.base_url,
                token=emulator.tokens[user],
                ca_file=emulator.ca_file,
                api_calls_in_flight=config.api_calls_in_flight,
                adaptive_concurrency=config.adaptive_concurrency,
                retry_policy=config.retry,
            ) as client:
                engine = TransferEngine(
                    client=client, journal=Journal(runner, events), target=job.target, config=config
                )
                return await engine.run()
    finally:
        events.close()


async def study_display_sets(client: GrandChallengeClient) -> dict[str, dict]:
    study = await client.reader_study_by_slug("example-study")
    return {display_set_title(ds): ds async for ds in client.iterate_display_sets(study["pk"])}


def values_by_socket(display_set: dict) -> dict[str, dict]:
    return {socket_slug_of(value): value for value in display_set["values"]}


TUTORIAL_SOCKETS = {"ct-image", "airway-segmentation"}


async def assert_tutorial_values(client: GrandChallengeClient, titles: Iterable[str] | None = None) -> None:
    """Each display set of ``titles`` (every one in the study when None) shows exactly the tutorial's two values, each
    with its imported image: what a user sees in the study once a tutorial case is done."""
    display_sets = await study_display_sets(client)
    for title in display_sets if titles is None else titles:
        values = values_by_socket(display_sets[title])
        assert set(values) == TUTORIAL_SOCKETS and all(value["image"] for value in values.values()), (title, values)


# ---- a killed run and its resumption -------------------------------------------------------------------------------


def gcbulk_run(job_file: Path, emulator: RunningEmulator, crash_at: str | None = None) -> subprocess.CompletedProcess:
    """``gcbulk run`` in its own process, killed with SIGKILL at ``crash_at`` (``engine/upload/crashpoints.py``)."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["GRAND_CHALLENGE_AUTHORIZATION"] = emulator.tokens["editor"]
    if crash_at:
        env[ENV_VAR] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "gcbulk", "run", str(job_file), "--progress-interval", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )


def start_gcbulk(emulator: RunningEmulator, *args: str) -> subprocess.Popen[str]:
    """``gcbulk <args>`` in its own process as the seeded editor, stdout and stderr piped: for runs a test kills or
    races. Several run at once in these tests, so none serves metrics (they would contend for the default port)."""
    env = {**os.environ, "GRAND_CHALLENGE_AUTHORIZATION": emulator.tokens["editor"], "GCBULK_METRICS_ADDRESS": "off"}
    return subprocess.Popen(
        [sys.executable, "-m", "gcbulk", *args],
        env=env,
        cwd=Path(__file__).parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass(frozen=True)
class Finished:
    """What a command run in this process left: its exit code and what it wrote."""

    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def resume_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[Path, RunningEmulator], Finished]:
    """``gcbulk run`` again, in this process, as a user resumes a killed run. Only the killed run needs a process of
    its own (SIGKILL ends it); a second cold interpreter would cost each crash test seconds and check nothing more.
    The crash hook stays off here: the test process never sets ``GCBULK_CRASH_AT`` (only the killed run's does)."""

    def resume(job_file: Path, emulator: RunningEmulator) -> Finished:
        monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", emulator.tokens["editor"])
        # Parallel test workers would contend for the default metrics port; nothing here reads /metrics.
        monkeypatch.setenv("GCBULK_METRICS_ADDRESS", "off")
        exit_code = main(["run", str(job_file), "--progress-interval", "60"])
        written = capsys.readouterr()
        return Finished(exit_code, written.out, written.err)

    return resume

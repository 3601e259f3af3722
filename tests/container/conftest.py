"""Fixtures of the container tests: job files, a clean GCBULK_* environment, the compose file's gcbulk service, and
follow mode run in-process beside a test with its JSON log in memory."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine import settings
from gcbulk.engine.service import logs
from gcbulk.engine.service.follow import Follower
from gcbulk.engine.service.job_service import JobService

REPO = Path(__file__).parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"

TUTORIAL_RULES = (
    '[[rules]]\nposition = 1\nsocket = "ct-image"\n\n[[rules]]\nposition = 2\nsocket = "airway-segmentation"\n'
)


def write_job_file(
    directory: Path,
    *,
    base_url: str = "https://gc.example/api/v1/",
    ca_file: Path | None = None,
    engine: str = "",
    case_root: str = "cases",
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / case_root).mkdir(parents=True, exist_ok=True)
    ca_line = f'ca_file = "{ca_file}"\n' if ca_file else ""
    job = directory / "job.toml"
    job.write_text(
        f'reader_study = "example-study"\nbase_url = "{base_url}"\ncase_root = "{case_root}"\n{ca_line}\n'
        f"{TUTORIAL_RULES}\n[engine]\n{engine}\n"
    )
    return job


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GCBULK_* or token variable of the developer's shell leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("GCBULK_") or name == "GRAND_CHALLENGE_AUTHORIZATION":
            monkeypatch.delenv(name)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_environment(service: str) -> dict[str, str]:
    environment = compose()["services"][service]["environment"]
    return {str(key): str(value) for key, value in environment.items()}


# ---- follow mode in-process ----------------------------------------------------------------------------------------

DEADLINE = 60.0


async def poll(condition: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Awaits ``condition`` until it returns something truthy; fails naming ``what`` after ``DEADLINE`` seconds."""
    with anyio.fail_after(DEADLINE):
        while not (value := await condition()):
            await anyio.sleep(0.05)
    assert value, what
    return value


@dataclass
class JsonLog:
    """The service's log lines, in memory, as the container writes them on stdout (JSON, one event a line)."""

    stream: io.StringIO = field(default_factory=io.StringIO)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in map(json.loads, self.stream.getvalue().splitlines()) if line["event"] == name]


@pytest.fixture
def json_log() -> Iterator[JsonLog]:
    log = JsonLog()
    setup = logs.configure("INFO", "json", stream=log.stream)
    try:
        yield log
    finally:
        setup.close()


def follow_settings(job: Path, emulator: RunningEmulator, **environ: str) -> settings.RunSettings:
    """A follow-mode job against ``emulator`` as the editor, polling every 50 ms, no metrics server; ``environ``: more
    ``GCBULK_*`` settings."""
    return settings.resolve(
        job,
        None,
        {
            "GRAND_CHALLENGE_AUTHORIZATION": emulator.tokens["editor"],
            "GCBULK_METRICS_ADDRESS": "off",
            "GCBULK_POLL_INTERVAL": "0.05",
            **environ,
        },
    )


@asynccontextmanager
async def following(service: JobService) -> AsyncIterator[list[int]]:
    """Follow mode running on ``service`` beside the block; the list holds its exit code once it has ended (the block
    ends it with ``service.request_stop``)."""
    exit_code: list[int] = []

    async def follow() -> None:
        exit_code.append(await Follower(service).run())

    async with anyio.create_task_group() as group:
        group.start_soon(follow)
        yield exit_code

"""Fixtures of the container tests: job files, a clean GCBULK_* environment, and the compose file's gcbulk service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

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

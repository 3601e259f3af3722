"""Fixtures of the planner tests: case trees on disk, job files, and planning them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gcbulk.engine.jobfile import JobConfig, load_job
from gcbulk.engine.plan.planner import PlannedCase, plan_tree
from gcbulk.engine.plan.preflight import Finding

TUTORIAL_RULES = """
[[rules]]
position = 1
socket = "ct-image"

[[rules]]
position = 2
socket = "airway-segmentation"
"""


def write_job(
    directory: Path,
    *,
    rules: str = TUTORIAL_RULES,
    cases: str = "",
    values: str = "",
    engine: str = "",
    head: str = "",
    base_url: str = "https://gc.example/api/v1/",
) -> Path:
    text = (
        f'reader_study = "example-study"\nbase_url = "{base_url}"\ncase_root = "cases"\n{head}\n'
        f"[cases]\n{cases}\n{rules}\n[values]\n{values}\n[engine]\n{engine}\n"
    )
    job_file = directory / "job.toml"
    job_file.write_text(text)
    return job_file


def put(path: Path, size: int = 16, content: bytes | None = None) -> Path:
    """A file of ``size`` bytes (or ``content``), with its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if content is not None else bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    return path


def put_mhd(folder: Path, stem: str, data_suffix: str = ".zraw", size: int = 32) -> None:
    header = f"ObjectType = Image\nNDims = 3\nElementDataFile = {stem}{data_suffix}\n"
    put(folder / f"{stem}.mhd", content=header.encode())
    put(folder / f"{stem}{data_suffix}", size)


def plan(config: JobConfig) -> tuple[list[PlannedCase], list[Finding]]:
    cases, findings = [], []
    for entry in plan_tree(config):
        if isinstance(entry, Finding):
            findings.append(entry)
        else:
            cases.append(entry)
            findings.extend(entry.findings)
    return cases, findings


@pytest.fixture
def job_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "cases").mkdir()
    yield tmp_path


@pytest.fixture
def cases_dir(job_dir: Path) -> Path:
    return job_dir / "cases"


@pytest.fixture
def tutorial(job_dir: Path) -> JobConfig:
    """The tutorial's layout: patient1 with one file, patient2 with a CT (.mhd + .zraw) and a segmentation."""
    put(job_dir / "cases" / "patient1" / "ct.mha", 100)
    put_mhd(job_dir / "cases" / "patient2", "ct")
    put(job_dir / "cases" / "patient2" / "seg.mha", 50)
    return load_job(write_job(job_dir))

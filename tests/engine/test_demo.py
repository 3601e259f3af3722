"""``gcbulk demo``: the README's first command runs a real migration against the bundled emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk


def test_the_demo_migrates_a_tutorial_shaped_tree_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gcbulk", "demo", "--cases", "2", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert "cases 2/2 done, 0 failed" in result.stderr
    for title in ("patient001", "patient002"):
        assert f"  {title} (order" in result.stdout
    assert "ct-image → image 1-ct.mha [32, 64, 64]" in result.stdout
    assert (tmp_path / "job.ledger.sqlite").exists() and (tmp_path / "job.events.jsonl").exists()
    assert "token" not in (tmp_path / "job.toml").read_text()
    image = sitk.ReadImage(str(tmp_path / "cases" / "patient001" / "1-ct.mha"))
    assert image.GetSize() == (64, 64, 32)


def test_the_demo_works_in_the_system_temp_folder_by_default_and_leaves_the_checkout_clean(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    repo = Path(__file__).parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "gcbulk", "demo", "--cases", "1", "--metrics-address", "off"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "gcbulk-demo" / "job.ledger.sqlite").exists()
    assert not (repo / "gcbulk-demo").exists()
    assert "monitoring_started" not in result.stdout + result.stderr  # --metrics-address off serves nothing


def test_a_demo_of_no_cases_is_refused_with_a_configuration_error_not_a_crash(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gcbulk", "demo", "--cases", "0", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 2, result.stderr  # exit 2: the input is wrong (it was 70, a crash)
    assert "gcbulk demo: --cases must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cases").exists()


def test_the_demo_shows_gcbulks_progress_and_results_and_the_emulators_logs_only_with_verbose(tmp_path: Path) -> None:
    def demo(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gcbulk", "demo", "--cases", "1", "--workdir", str(tmp_path), "--metrics-address"]
            + ["off", *extra],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).parents[2],
        )

    quiet = demo()
    assert quiet.returncode == 0, quiet.stderr
    assert "cases 1/1 done, 0 failed" in quiet.stderr  # the engine's progress and outcome
    assert "patient001 (order" in quiet.stdout  # the results: what the server now holds
    assert "panimg" not in quiet.stdout + quiet.stderr
    verbose = demo("--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "panimg" in verbose.stdout + verbose.stderr  # the emulator's import worker, converting the images

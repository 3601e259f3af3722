"""The compose demo's one-shot `demo-cases` service: `gcbulk demo --generate-only` adds missing case folders only."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcbulk.engine.cli import main


def test_generate_only_writes_the_missing_patient_folders_and_leaves_the_others_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--generate-only", "--cases", "2", "--workdir", str(tmp_path)]) == 0
    first = tmp_path / "cases" / "patient001" / "1-ct.mha"
    before = first.stat().st_mtime_ns
    assert main(["demo", "--generate-only", "--cases", "3", "--workdir", str(tmp_path)]) == 0

    assert sorted(p.name for p in (tmp_path / "cases").iterdir()) == ["patient001", "patient002", "patient003"]
    assert sorted(p.name for p in (tmp_path / "cases" / "patient003").iterdir()) == ["1-ct.mha", "2-airway.mha"]
    assert first.stat().st_mtime_ns == before  # a running gcbulk may be reading it: not rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases"]  # no emulator, job file or ledger
    assert "wrote 1 tutorial-shaped case(s)" in capsys.readouterr().err

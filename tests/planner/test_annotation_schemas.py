"""The planner refuses exactly the socket values the server refuses (docs/gc-api.md §11): every row of the table in
tests/annotation_values.py, which the emulator's checks run too (tests/emulator/test_value_schemas.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcbulk.engine.cli import main
from gcbulk.engine.plan.cases import PlannedItem
from gcbulk.engine.plan.content import ContentChecker
from tests.annotation_values import POLYGON, ROWS, Row, V
from tests.planner.conftest import write_job


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
def test_a_value_of_every_kind_is_accepted_or_refused_as_the_server_does(row: Row) -> None:
    slug = "kind-" + row.kind.lower().replace(" ", "-")
    checker = ContentChecker({slug: {"slug": slug, "kind": row.kind, "super_kind": "Value"}})
    found = checker.check(PlannedItem(slug, value_json=json.dumps(row.value)), "/nowhere", "/nowhere/p1", "p1")
    if row.accepted:
        assert found == []
    else:
        assert [f.code for f in found] == ["schema-mismatch"]
        assert found[0].blocking and f"does not fit its kind {row.kind!r}" in found[0].message


def test_a_json_file_the_server_would_drop_silently_blocks_the_plan(
    job_dir: Path, cases_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """A "Multiple polygons" file whose polygons carry a version: the server's background check drops it without a
    word (the value never appears); plan names the file and the key, and exits 1 before anything is sent."""
    sockets = [{"slug": "outlines", "kind": "Multiple polygons", "super_kind": "File", "relative_path": "p.json"}]
    (job_dir / "sockets.json").write_text(json.dumps({"count": 1, "results": sockets}))
    bad = cases_dir / "p1" / "outlines.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        json.dumps({"type": "Multiple polygons", "version": V, "polygons": [{"name": "a", **POLYGON, "version": V}]})
    )
    rules = '[[rules]]\nglob = "outlines.json"\nsocket = "outlines"\n'
    code = main(["plan", str(write_job(job_dir, rules=rules)), "--offline", "--sockets", str(job_dir / "sockets.json")])
    out = capsys.readouterr().out
    assert code == 1
    assert f"BLOCKING [schema-mismatch] {bad}" in out
    assert "the value for socket 'outlines' does not fit its kind 'Multiple polygons': polygons/0" in out
    assert "Additional properties are not allowed ('version' was unexpected)" in out

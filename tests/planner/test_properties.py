"""Properties over generated case trees: every file is accounted for exactly once, and re-planning is idempotent."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gcbulk.engine.jobfile import load_job
from gcbulk.engine.plan.planner import PlannedCase, plan_tree
from gcbulk.engine.service.plan_recording import plan_into_ledger
from gcbulk.state.ledger import Ledger
from tests.planner.conftest import put, write_job
from tests.planner.test_replan import snapshot

RULES = """
[[rules]]
glob = "*.pdf"
socket = "report-pdf"

[[rules]]
glob = "*.json"
socket = "patient-age"
value = true

[[rules]]
position = 1
socket = "ct-image"

[[rules]]
position = 2
socket = "airway-segmentation"
"""

_names = st.text(alphabet="abcdXY01_-", min_size=1, max_size=8)
_kinds = st.sampled_from(["mha", "mha", "pdf", "txt", "empty", "mhd-pair", "mhd-orphan", "json"])
_case = st.lists(st.tuples(_names, _kinds, st.integers(1, 300), st.booleans()), max_size=5, unique_by=lambda f: f[0])
_trees = st.tuples(st.dictionaries(_names, _case, max_size=5), st.lists(_names, max_size=2, unique=True))


def _materialise(root: Path, tree: tuple[dict, list]) -> None:
    cases, loose = tree
    for folder, files in cases.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for stem, kind, size, nested in files:
            where = root / folder / ("sub" if nested else "")
            if kind == "mhd-pair":
                put(where / f"{stem}.mhd", content=f"NDims = 3\nElementDataFile = {stem}.zraw\n".encode())
                put(where / f"{stem}.zraw", size)
            elif kind == "mhd-orphan":
                put(where / f"{stem}.mhd", content=f"NDims = 3\nElementDataFile = {stem}.raw\n".encode())
            elif kind == "json":
                put(where / f"{stem}.json", content=json.dumps({"n": size}).encode())
            elif kind == "empty":
                put(where / f"{stem}.mha", content=b"")
            else:
                put(where / f"{stem}.{kind}", size)
    for name in loose:
        put(root / f"{name}.mha")


def _all_files(root: Path) -> list[str]:
    return [
        (Path(directory) / name).relative_to(root).as_posix() for directory, _, names in os.walk(root) for name in names
    ]


def _job(directory: Path) -> Path:
    return write_job(directory, rules=RULES, cases='ignore = ["*.txt"]')


@settings(max_examples=60, deadline=None)
@given(tree=_trees)
def test_every_file_lands_in_exactly_one_item_or_one_finding(tree: tuple[dict, list]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        _materialise(directory / "cases", tree)
        (directory / "cases").mkdir(exist_ok=True)
        accounted: Counter[str] = Counter()
        for entry in plan_tree(load_job(_job(directory))):
            findings = entry.findings if isinstance(entry, PlannedCase) else (entry,)
            for finding in findings:
                accounted.update(finding.files)
            if isinstance(entry, PlannedCase):
                for item in entry.items:
                    accounted.update(f.path for f in item.files)
                    if item.value_path is not None:
                        accounted[item.value_path] += 1
        assert accounted == Counter(_all_files(directory / "cases"))


@settings(max_examples=25, deadline=None)
@given(tree=_trees)
def test_replanning_the_same_tree_is_idempotent(tree: tuple[dict, list]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        _materialise(directory / "cases", tree)
        (directory / "cases").mkdir(exist_ok=True)
        config = load_job(_job(directory))
        with Ledger.open(directory / "job.ledger.sqlite", config.binding) as ledger:
            first = plan_into_ledger(config, ledger, catalogue=None)
            recorded = snapshot(ledger)
            second = plan_into_ledger(config, ledger, catalogue=None)
            assert snapshot(ledger) == recorded
        assert second.diff.new_cases == 0
        assert (second.diff.requeued, second.diff.removed, second.diff.changed_after_consumed) == ([], [], [])
        assert sum(second.diff.unchanged.values()) + len(second.diff.blocked) == first.diff.cases
        assert [f.as_dict() for f in second.findings] == [f.as_dict() for f in first.findings]


_REQUIRED_RULES = RULES.replace('socket = "airway-segmentation"', 'socket = "airway-segmentation"\nrequired = true')


@settings(max_examples=25, deadline=None)
@given(tree=_trees, titles=st.sampled_from(["template", "csv"]), mapped=st.integers(0, 5))
def test_replanning_is_idempotent_with_blocked_cases_required_sockets_and_pseudonymised_titles(
    tree: tuple[dict, list], titles: str, mapped: int
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        _materialise(directory / "cases", tree)
        (directory / "cases").mkdir(exist_ok=True)
        if titles == "csv":  # the first `mapped` folders have a row; the others are blocked for want of one
            rows = "".join(f"{folder},case-{n}\n" for n, folder in enumerate(sorted(tree[0])[:mapped]))
            (directory / "titles.csv").write_text("folder,title\n" + rows)
            cases = 'ignore = ["*.txt"]\ntitles_csv = "titles.csv"'
        else:
            cases = 'ignore = ["*.txt"]\ntitle = "case-{folder|sha256:8}"'
        config = load_job(write_job(directory, rules=_REQUIRED_RULES, cases=cases))
        with Ledger.open(directory / "job.ledger.sqlite", config.binding) as ledger:
            first = plan_into_ledger(config, ledger, catalogue=None)
            recorded = snapshot(ledger)
            second = plan_into_ledger(config, ledger, catalogue=None)
            assert snapshot(ledger) == recorded
            # Blocked cases block only themselves: the plan stays runnable.
            assert ledger.plan_state == "complete"
            recorded_titles = [row["title"] for row in ledger.rows("SELECT title FROM cases")]
        # No title carries the folder name: each is a hash, a CSV title, or a hashed stand-in.
        pseudonym = re.compile(r"case-[0-9a-f]{8}|case-\d+|untitled-[0-9a-f]{12}")
        assert all(pseudonym.fullmatch(title) for title in recorded_titles), recorded_titles
        assert second.diff.new_cases == 0 and second.diff.blocked == first.diff.blocked
        assert (second.diff.requeued, second.diff.removed, second.diff.changed_after_consumed) == ([], [], [])
        assert sum(second.diff.unchanged.values()) + len(second.diff.blocked) == first.diff.cases
        assert [f.as_dict() for f in second.findings] == [f.as_dict() for f in first.findings]

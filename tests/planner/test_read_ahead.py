"""The content checks' reads run on reader threads ahead of the cases being checked (issue 31): while one window of
cases is checked and recorded, the next window's files are already being read."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gcbulk.engine.jobfile import load_job
from gcbulk.engine.plan.planner import PlannedCase, plan_tree
from gcbulk.engine.plan.preflight import Preflight
from tests.imaging import make_mha
from tests.planner.conftest import write_job

CATALOGUE = {
    "ct-image": {"slug": "ct-image", "kind": "Image", "super_kind": "Image"},
    "airway-segmentation": {"slug": "airway-segmentation", "kind": "Image", "super_kind": "Image"},
}


class CountingReaders(ThreadPoolExecutor):
    """Real reader threads that count the reads asked of them."""

    def __init__(self) -> None:
        super().__init__(2)
        self.asked = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.asked += 1
        return super().submit(fn, *args, **kwargs)


def test_the_next_windows_files_are_being_read_while_the_first_windows_cases_are_checked(
    job_dir: Path, cases_dir: Path
) -> None:
    for n in range(6):
        make_mha(cases_dir / f"p{n}" / "a.mha", (2, 4, 4))
        make_mha(cases_dir / f"p{n}" / "b.mha", (2, 4, 4))
    config = load_job(write_job(job_dir))
    preflight = Preflight(config=config, catalogue=CATALOGUE)
    asked_when_checked: list[int] = []
    with CountingReaders() as readers:
        for entry in preflight.reading_ahead(plan_tree(config), readers, window=2):
            assert isinstance(entry, PlannedCase)
            asked_when_checked.append(readers.asked)
            assert not preflight.check_case(entry).findings
    # Two files a case, two cases a window: the first case is checked once two windows' reads are asked for, and
    # never more than two windows are ahead.
    assert asked_when_checked == [8, 8, 12, 12, 12, 12]
    assert preflight.content_files_read == 12

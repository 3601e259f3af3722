"""An export in a folder where someone planted links, and masks larger than allowed (issue 14)."""

from __future__ import annotations

import stat
from pathlib import Path

from gcbulk.engine.results.export import ExportOptions, export_reader_study
from gcbulk.engine.results.export_files import ANSWERS_CSV
from gcbulk.engine.results.masks import DownloadLimits
from tests.results.conftest import STUDY, World


async def test_an_export_never_follows_links_planted_in_its_folder(world: World, tmp_path: Path) -> None:
    world.add_every_answer_type()
    world.add_display_sets(['=HYPERLINK("http://evil")', "case-2"])
    await world.answer_all(["reader1"])
    out = tmp_path / "export"
    (out / ".gcbulk" / "partial").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    for name in (ANSWERS_CSV, f".{ANSWERS_CSV}.partial", "questions.json"):
        (out / name).symlink_to(victim)
    summary = await world.export(out)
    assert victim.read_text() == "keep me"
    assert not (out / ANSWERS_CSV).is_symlink() and summary.answers > 0
    assert stat.S_IMODE((out / ANSWERS_CSV).stat().st_mode) == 0o600
    # A case title that a spreadsheet would run is written as text (README: CSV cells).
    text = (out / ANSWERS_CSV).read_text()
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text


async def test_a_mask_larger_than_the_limit_fails_without_filling_the_disk(world: World, tmp_path: Path) -> None:
    world.add_every_answer_type()
    world.add_display_sets(['=HYPERLINK("http://evil")', "case-2"])
    await world.answer_all(["reader1"])
    out = tmp_path / "export"
    async with world.client() as client:
        summary = await export_reader_study(
            client, ExportOptions(reader_study=STUDY, out_dir=out, download_limits=DownloadLimits(max_bytes=100))
        )
    assert summary.masks.failed > 0
    assert any("more than the 100 allowed" in failure for failure in summary.masks.failures)
    assert not list((out / ".gcbulk" / "partial").glob("*.part"))

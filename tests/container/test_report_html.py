"""`gcbulk report JOB --html OUT.html`: one self-contained page that tells how the migration went and what is left."""

from __future__ import annotations

import os
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gcbulk.engine.cli import main
from gcbulk.engine.plan.titles import redacted
from gcbulk.state.ledger import Ledger
from gcbulk.state.replan import planning
from gcbulk.state.report_aggregates import CASES_PER_REASON, reason_groups, reason_shape
from tests.container.migration_history import BLOCKING, FAILURE, planned, write_history


class Resources(HTMLParser):
    """Every tag, and every attribute that could load something from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.loads: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.loads += [f"{tag} {name}={value}" for name, value in attrs if name in ("src", "href", "srcset")]


def write_page(tmp_path: Path, *extra: str) -> tuple[int, str]:
    history = write_history(tmp_path / "job")
    out = tmp_path / "report.html"
    code = main(["report", str(history.job_file), "--html", str(out), *extra])
    return code, out.read_text(encoding="utf-8") if out.exists() else ""


def test_the_page_says_how_the_migration_went_and_what_is_left(tmp_path: Path, capsys) -> None:
    code, page = write_page(tmp_path)
    assert code == 0
    assert "5 case(s) drawn in" in capsys.readouterr().err
    # The headline and the state bar: two of five done, one still to send, two for a person.
    assert "2 of 5 cases are on Grand Challenge (40.0 %)" in page
    assert "Left: 1 still to send; 2 need a person" in page
    for words in ("2</b> done", "1</b> not started yet", "1</b> failed", "1</b> blocked by the plan"):
        assert words in page
    # Failed and blocked cases, grouped by reason, with the case and its full reason.
    assert "1 failed: display set ds-N: the server&#x27;s import of ct-image failed" in page.replace("</span>", "")
    assert "patient3" in page and "unsupported pixel type" in page
    assert "patient4" in page and "geometry-mismatch" in page and "33×64×64" in page
    # Bytes over time and time per case, drawn as inline SVG.
    assert page.count("<svg") == 3
    assert "2 cases, from their first byte sent to their display set imported" in page
    # The server's waits, the kill, the stop and the comparison with the server.
    assert "<b>2</b> throttled by the server (429)" in page
    assert "<b>1</b> upload quota exhausted" in page
    assert "2 runs; 1 killed or cut off and resumed by a later run." in page
    assert "stop requested (SIGTERM)" in page
    assert "2 display sets checked; the server held everything the ledger says it does" in page


def test_the_page_loads_nothing_from_elsewhere_and_has_no_script(tmp_path: Path) -> None:
    _, page = write_page(tmp_path)
    parser = Resources()
    parser.feed(page)
    assert parser.loads == []
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    assert "@media print" in page  # printable: colours kept, sections not split across pages


def test_the_page_is_private_to_its_owner_like_the_ledger(tmp_path: Path) -> None:
    write_page(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "report.html").st_mode) == 0o600


def test_redact_titles_shows_hashes_instead_of_titles_and_folders(tmp_path: Path) -> None:
    _, page = write_page(tmp_path, "--redact-titles")
    for title in ("patient3", "patient4"):
        assert title not in page
        assert redacted(title) in page


def test_a_credential_in_a_reason_never_reaches_the_page(tmp_path: Path) -> None:
    from gcbulk.engine.jobfile import load_job

    history = write_history(tmp_path / "job")
    with Ledger.open(history.ledger, load_job(history.job_file).binding) as ledger:
        case_id = ledger.case_id_by_title("patient5")
        ledger.case_started(case_id)
        ledger.case_failed(case_id, "the proxy echoed 'Authorization: Bearer 0123456789abcdef0123' and refused it")
    out = tmp_path / "report.html"
    assert main(["report", str(history.job_file), "--html", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "0123456789abcdef0123" not in page
    assert "Bearer [REDACTED]" in page


def test_a_run_killed_last_is_shown_as_not_resumed_yet(tmp_path: Path) -> None:
    from datetime import timedelta

    from gcbulk.engine.jobfile import load_job
    from tests.container.migration_history import START

    history = write_history(tmp_path / "job")
    later = START + timedelta(hours=1)  # a third run, killed an hour in: its heartbeat is long past
    with Ledger.open(history.ledger, load_job(history.job_file).binding, clock=lambda: later) as ledger:
        ledger.register_worker("host-303", host="host", pid=303)
    out = tmp_path / "report.html"
    assert main(["report", str(history.job_file), "--html", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert (
        "3 runs; 1 killed or cut off and resumed by a later run; 1 killed or cut off and not resumed yet "
        "(run the job again)." in page
    )


def test_a_title_with_markup_is_shown_as_text(tmp_path: Path) -> None:
    history = write_history(tmp_path / "job", titles=("a", "b", "<img src=x onerror=alert(1)>"))
    out = tmp_path / "report.html"
    assert main(["report", str(history.job_file), "--html", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_without_a_ledger_the_report_exits_2_saying_what_to_do(tmp_path: Path, capsys) -> None:
    from tests.container.conftest import write_job_file

    job = write_job_file(tmp_path / "job")
    assert main(["report", str(job), "--html", str(tmp_path / "r.html")]) == 2
    assert "run 'gcbulk plan' for this job first" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_html_with_out_exits_2_saying_which_to_drop(tmp_path: Path, capsys) -> None:
    history = write_history(tmp_path / "job")
    code = main(["report", str(history.job_file), "--html", str(tmp_path / "r.html"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--html OUT.html names its own file: drop --out" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "o").exists()


def test_without_an_event_file_the_page_says_what_it_cannot_show(tmp_path: Path) -> None:
    history = write_history(tmp_path / "job")
    history.events.unlink()
    out = tmp_path / "report.html"
    assert main(["report", str(history.job_file), "--html", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "No event file was found: server waits, stop requests and checks are not shown." in page
    assert "2 of 5 cases are on Grand Challenge" in page


def test_a_large_reason_group_shows_a_page_of_cases_and_says_how_many_more(tmp_path: Path) -> None:
    from tests.state.conftest import BINDING

    cases = 3 * CASES_PER_REASON
    with Ledger.open(tmp_path / "l.sqlite", BINDING) as ledger:
        with planning(ledger) as plan:
            for n in range(cases):
                plan.add(planned(f"case{n:03d}"))
            plan.finish()
        for n in range(cases):
            case_id = ledger.case_id_by_title(f"case{n:03d}")
            ledger.case_started(case_id)
            ledger.case_failed(case_id, f"display set ds-{n}: import did not finish within 3600 s")
        groups = reason_groups(ledger)
    assert [(g.state, g.count, len(g.cases)) for g in groups] == [("failed", cases, CASES_PER_REASON)]
    assert groups[0].reason == "display set ds-N: import did not finish within N s"


@pytest.mark.parametrize(
    ("reason", "shape"),
    [
        (FAILURE, "display set ds-N: the server's import of ct-image failed: 'unsupported pixel type'"),
        ("file 'patient7/ct.mha' is empty", "file '…' is empty"),
        ("upload 7f3e2a1b-0c4d-4e5f-8a9b-0123456789ab expired", "upload <id> expired"),
        ("", "no reason recorded"),
        ("first line\nsecond line", "first line"),
        (BLOCKING, "N-seg.mha has N×N×N voxels and N-ct.mha N×N×N: Grand Challenge would refuse the pair"),
    ],
)
def test_alike_reasons_share_one_shape(reason: str, shape: str) -> None:
    assert reason_shape(reason) == shape


def test_after_a_real_migration_the_page_shows_it_complete_checked_and_within_the_servers_limits(
    tmp_path: Path,
) -> None:
    """`gcbulk demo` migrates three cases into the bundled emulator (on loopback); the report of that job says so."""
    workdir = tmp_path / "demo"
    assert main(["demo", "--cases", "3", "--workdir", str(workdir), "--metrics-address", "off"]) == 0
    out = tmp_path / "report.html"
    assert main(["report", str(workdir / "job.toml"), "--html", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "Complete: 3 of 3 cases are on Grand Challenge (100.0 %)" in page
    assert "Nothing is left to do." in page
    assert "3 cases, from their first byte sent to their display set imported" in page
    assert "1 run; none was killed or cut off." in page
    assert "3 display sets checked; the server held everything the ledger says it does" in page
    # Not held back by the server's limits (a slow import on a busy machine may show as a wait, truthfully).
    for limit in ("throttled by the server (429)", "upload cap reached", "upload quota exhausted"):
        assert limit not in page
    assert "No case failed, is blocked or vanished." in page

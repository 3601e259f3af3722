"""Benchmarks that cannot rot: every script in ``benchmarks/`` runs here at a tiny scale, as a user would start it
(its own process, its own emulator on 127.0.0.1), and its printed table must have its rows and columns with sane
numbers. Timings are never asserted: only that each figure is there, is a number and means what its column says.

``compare_gcapi.py`` belongs to the cost work; it is run here unchanged, in its existing quick mode (``--scale``).
``harness.py``, ``gcapi_clients.py`` and ``capacity_runs.py`` are the modules those scripts run (gcapi's client
through ``compare_gcapi.py``'s W1; ``capacity_runs.py``'s R1 takes half a minute, so it runs with the soak tests).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg_server import find_bin_dir

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"[\d,]+(?:\.\d+)?"


def run_benchmark(*argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``python ARGV…`` from the repository root, as the scripts' docstrings show, bounded by ``timeout``; the
    settings of a developer's shell (``GCBULK_*``, a token) are not passed on."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GCBULK_") and key != "GRAND_CHALLENGE_AUTHORIZATION"
    }
    return subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def number(text: str) -> float:
    return float(text.replace(",", ""))


def finished(result: subprocess.CompletedProcess[str], *, codes: tuple[int, ...] = (0,)) -> str:
    """The script's output, once it exited with one of ``codes`` and without a traceback (a crash also exits 1,
    which some scripts use for "a goal was not met")."""
    assert result.returncode in codes and "Traceback" not in result.stderr, (
        f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def test_plan_scale_prints_a_row_per_size_with_its_planning_rates(tmp_path: Path) -> None:
    out = finished(run_benchmark("benchmarks/plan_scale.py", "--sizes", "100", "--workdir", str(tmp_path)))
    header, row, *legend = out.splitlines()
    assert (
        header.split()
        == (
            "files cases walk files/s plan files/s plan s CPU s checked files/s checked s CPU s re-checked files/s "
            "re-checked s CPU s peak RSS MiB ledger MiB"
        ).split()
    )
    files, cases, walk, plan, _, _, checked, _, _, rechecked, _, _, rss, ledger = map(number, row.split())
    assert (files, cases) == (100, 10)  # ten files per case folder
    assert min(walk, plan, checked, rechecked, rss, ledger) > 0  # (seconds may print as 0.0 at this size)
    assert "plan files/s includes preflight" in legend[0]
    assert list(tmp_path.iterdir()) == []  # the generated tree is removed unless --keep


def test_part_size_prints_a_rate_per_part_size(tmp_path: Path) -> None:
    out = finished(
        run_benchmark(
            "benchmarks/part_size.py",
            *("--files", "2", "--file-mib", "5", "--sizes", "5", "--repeat", "1", "--workdir", str(tmp_path)),
        )
    )
    assert out.splitlines()[0] == "2 files × 5 MiB, 16 parts in flight, 0 ms latency per request"
    rate = re.fullmatch(rf"part size\s+5 MiB:\s+({NUMBER}) MiB/s \(best of 1: ({NUMBER})\)", out.splitlines()[1])
    assert rate is not None, out
    assert number(rate[1]) == number(rate[2]) > 0


def test_report_scale_builds_the_page_for_its_synthetic_cases(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    out = finished(
        run_benchmark("benchmarks/report_scale.py", "--cases", "50", "--work-dir", str(tmp_path), "--out", str(page))
    )
    assert "synthetic job: 50 cases" in out
    built = re.search(rf"report: ({NUMBER}) KiB, built in ({NUMBER}) s .*peak RSS ({NUMBER}) MiB, for 50 cases", out)
    assert built is not None, out
    assert number(built[1]) == pytest.approx(page.stat().st_size / 1024, abs=1)
    assert number(built[3]) > 0
    assert "50 cases are on Grand Challenge" in page.read_text(encoding="utf-8")  # the page counts every case


def test_dicom_scan_prints_each_step_with_its_files_per_second(tmp_path: Path) -> None:
    out = finished(
        run_benchmark("benchmarks/dicom_scan.py", "--files", "200", "--deid-files", "20", "--workdir", str(tmp_path))
    )
    steps = {
        match["step"].strip(): (number(match["rate"]), match["notes"])
        for match in re.finditer(
            rf"^(?P<step>[a-z][^\d\n]+?(?:\d process\(es\)|\d processes)?)\s+(?P<rate>{NUMBER})"
            rf"\s+{NUMBER}\s+(?P<notes>.+)$",
            out,
            re.MULTILINE,
        )
    }
    assert {name.split(",")[0] for name in steps} == {
        "header scan + series grouping",
        "plan with a dicom rule",
        "de-identification",
    }, out
    assert all(rate > 0 for rate, _ in steps.values())
    assert steps["header scan + series grouping, 1 process(es)"][1] == "2 series"  # 200 files: 2 series of 100
    assert steps["plan with a dicom rule, 2 processes"][1] == "2 cases"
    assert steps["de-identification, 2 processes"][1].endswith(", 0 errors")


def test_emulator_rss_uploads_through_the_real_flow_and_prints_baseline_and_peak() -> None:
    out = finished(
        run_benchmark("benchmarks/emulator_rss.py", "--size-gib", "0.02", "--part-mib", "5", "--concurrency", "2")
    )
    assert re.search(r"^uploaded 20 MiB in 5 MiB parts, 2 in flight, https: ", out, re.MULTILINE), out
    rss = re.search(rf"emulator RSS: baseline ({NUMBER}) MiB, peak ({NUMBER}) MiB \((\d+) samples", out)
    assert rss is not None, out
    assert 0 < number(rss[1]) <= number(rss[2]) and int(rss[3]) > 0


def test_export_scale_exports_every_answer_and_mask_twice(tmp_path: Path) -> None:
    out = finished(
        run_benchmark(
            "benchmarks/export_scale.py", "--answers", "30", "--masks", "2", "--work-dir", str(tmp_path), timeout=180
        )
    )
    assert re.search(r"^seeded 30 answers \(2 with masks\) on \d+ display sets", out, re.MULTILINE), out
    for run in ("full export", "rerun, nothing changed"):
        assert re.search(rf"^{run}: {NUMBER} s wall, peak RSS {NUMBER} MiB, exit 0$", out, re.MULTILINE), out
    assert "answers.csv rows: 30; mask files: 2" in out
    assert len(list((tmp_path / "export" / "masks").rglob("*.mha"))) == 2


def test_ledger_statements_counts_statements_and_transactions_per_case() -> None:
    out = finished(run_benchmark("-m", "benchmarks.ledger_statements", "--cases", "3", "--runs", "1", "--top", "5"))
    run = re.search(
        rf"^run 1: (\d+) statements \(({NUMBER})/case\), (\d+) transactions \(({NUMBER})/case\), (\d+) ledger calls",
        out,
        re.MULTILINE,
    )
    assert run is not None, out
    assert int(run[1]) / 3 == pytest.approx(number(run[2]), abs=0.1)
    assert int(run[3]) / 3 == pytest.approx(number(run[4]), abs=0.1)
    assert 0 < int(run[3]) < int(run[1])  # a transaction is at least BEGIN and COMMIT
    assert "most repeated statements of the last run:" in out and "BEGIN" in out


@pytest.mark.skipif(find_bin_dir() is None, reason="PostgreSQL's initdb/pg_ctl not found: --postgres needs one")
def test_ledger_statements_counts_postgresql_round_trips_per_case_and_per_ledger_call() -> None:
    out = finished(
        run_benchmark(
            "-m", "benchmarks.ledger_statements", "--cases", "3", "--runs", "1", "--top", "5", "--postgres", timeout=180
        )
    )
    run = re.search(rf"^run 1: .*, (\d+) round trips \(({NUMBER})/case\)", out, re.MULTILINE)
    assert run is not None, out
    assert int(run[1]) / 3 == pytest.approx(number(run[2]), abs=0.1)
    transfer = re.search(rf"^  transfer only .*, ({NUMBER}) round trips/case", out, re.MULTILINE)
    assert transfer is not None, out
    assert 0 < number(transfer[1]) < number(run[2])  # opening the ledger and recording the plan cost some too
    calls = out.split("ledger calls of the last run (count, CPU s, PostgreSQL round trips):\n", 1)[1].splitlines()
    # The most frequent ledger call first, with the round trips it took.
    count, _, trips, name = calls[0].split()
    assert int(count) > 0 and int(trips) >= 0 and name.isidentifier()


@pytest.mark.skipif(find_bin_dir() is None, reason="PostgreSQL's initdb/pg_ctl not found: scale_out.py needs one")
def test_scale_out_prints_the_fraction_of_the_host_bound_per_worker_count(tmp_path: Path) -> None:
    out = finished(
        run_benchmark(
            "benchmarks/scale_out.py",
            *("--scale", "0.01", "--workers", "1,2", "--only", "W3", "--workdir", str(tmp_path)),
            timeout=180,
        ),
        codes=(0, 1),  # 1: a goal not met, which a tiny run on a shared machine may well be
    )
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("workload  workers"))
    assert "machine bound s  of bound  best on this host" in header
    rows = [line.split() for line in lines if line.startswith("W3 ")]
    assert [row[1] for row in rows] == ["1", "2"]
    for row in rows:
        assert row[4] == "2/2"  # every case done, by one worker or shared between two
        assert row[5:7] == ["2", "(0)"]  # one display set per case, no duplicate
        of_bound = next(n for n, cell in enumerate(row) if cell.endswith("%"))
        wall, bound, fraction = number(row[2]), number(row[of_bound - 1]), number(row[of_bound].rstrip("%"))
        assert 0 < bound and fraction == pytest.approx(100 * bound / wall, abs=2)  # printed rounded
    assert "of bound: that bound ÷ the row's wall time" in out


def test_compare_gcapi_quick_mode_prints_its_goal_table(tmp_path: Path) -> None:
    out = finished(
        run_benchmark(
            "benchmarks/compare_gcapi.py", "--scale", "0.01", "--only", "W1", "--workdir", str(tmp_path), timeout=180
        ),
        codes=(0, 1),  # 1: a goal not met (W1 at 2 cases is no fair race)
    )
    assert "W1: 2 cases × 10 files × 1 MiB = 20 MiB" in out
    for client in ("ceiling", "gcbulk", "gcapi"):
        assert re.search(rf"^  {client}\s+{NUMBER} s\s+{NUMBER} MiB/s$", out, re.MULTILINE), out
    rows = [line for line in out.splitlines() if line.startswith("W1  ")]
    assert rows and all(line.endswith(("met", "NOT met")) for line in rows)


@pytest.mark.soak  # half a minute: R1's capacity profile imports for real, three clients one after another
def test_compare_gcapi_r1_prints_the_capacity_rows_of_capacity_runs(tmp_path: Path) -> None:
    out = finished(
        run_benchmark(
            "benchmarks/compare_gcapi.py", "--scale", "0.01", "--only", "R1", "--workdir", str(tmp_path), timeout=300
        ),
        codes=(0, 1),
    )
    assert re.search(rf"^R1: 4 cases, {NUMBER} MiB, floor {NUMBER} s$", out, re.MULTILINE), out
    for client in ("gcbulk", "gcapi", "gcbulk, stagger off"):
        assert re.search(rf"^  {re.escape(client)}\s+{NUMBER} s\s+{NUMBER} req/case", out, re.MULTILINE), out
    assert any(line.startswith("R1        wall / import floor") for line in out.splitlines()), out


@pytest.mark.parametrize(
    ("mode", "cases", "checkpoints"),
    [
        ((), 40, (10, 30)),
        # A study that holds display sets someone else made, which a follow-mode round lists.
        (("--follow", "--feed", "20", "--heap", "--existing-display-sets", "5"), 40, (10, 30)),
        # Real imports of two images a case: fewer of them, fed two a second. Not one-shot: its imports end in bursts
        # (six cases within 0.2 s), so two checkpoints can pass between two looks, or at the exit.
        (("--tutorial", "--follow", "--feed", "2", "--heap"), 8, (2, 6)),
    ],
    ids=["one-shot", "follow", "tutorial"],
)
def test_memory_growth_prints_rss_against_cases_done(
    tmp_path: Path, mode: tuple[str, ...], cases: int, checkpoints: tuple[int, int]
) -> None:
    out = finished(
        run_benchmark(
            "-m",
            "benchmarks.memory_growth",
            # The last checkpoint before the last case: a one-shot run exits as its last case is done.
            *("--cases", str(cases), "--checkpoints", ",".join(map(str, checkpoints)), "--workdir", str(tmp_path)),
            *mode,
            timeout=180,
        )
    )
    lines = out.splitlines()
    what = (
        f"{cases} tutorial cases (ct.mha and seg.mha" if "--tutorial" in mode else f"{cases} cases × 1 file of 1024 B"
    )
    assert lines[0].startswith(what), lines[0]
    assert ("gcbulk run (follow mode" if "--follow" in mode else "gcbulk run (one-shot") in lines[0]
    header = next(n for n, line in enumerate(lines) if line.split()[:2] == ["cases", "done"])
    assert lines[header].split() == "cases done RSS MiB growth MiB KiB/case since previous fds".split()
    first, last = (line.split() for line in lines[header + 1 : header + 3])
    assert int(first[0]) >= checkpoints[0] and int(last[0]) >= checkpoints[1]
    assert number(first[1]) > 0 and number(last[1]) > 0 and first[2] == "+0.0"
    assert number(last[2]) == pytest.approx(number(last[1]) - number(first[1]), abs=0.11)
    assert re.search(r"^growth from \d+ to \d+ cases: [+-]\d+\.\d MiB", out, re.MULTILINE), out
    assert "gcbulk run exited 0" in out  # follow mode: stopped by SIGTERM once every case was done
    if "--heap" in mode:  # where the RSS is: the C allocator's in-use and free bytes, Python's live blocks
        heap = next(n for n, line in enumerate(lines) if line.split()[4:7] == ["malloc", "in", "use"])
        assert len(lines[heap + 1].split()) == 6 and len(lines[heap + 2].split()) == 6, lines[heap : heap + 3]
        assert "live objects (gc) that grew most, per case finished:" in out


def test_copy_vs_upload_prints_an_upload_row_and_a_copy_row_without_part_puts(tmp_path: Path) -> None:
    out = finished(run_benchmark("benchmarks/copy_vs_upload.py", "--cases", "2", "--workdir", str(tmp_path)))
    assert out.startswith("emulator: default profile")
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]
    rows = {cells[0]: cells[1:] for cells in table if cells[0] in ("upload", "copy")}
    assert set(rows) == {"upload", "copy"}
    for cells in rows.values():
        assert all(re.fullmatch(NUMBER, cell.strip()) for cell in cells), cells
        assert number(cells[0]) == 2  # cases
    assert number(rows["upload"][-1]) == 4, "two cases of two one-part files: four part PUTs"
    assert number(rows["copy"][-1]) == 0, "a copy sends no byte"

"""``gcbulk plan`` and ``gcbulk status`` as a user runs them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.cli import main
from gcbulk.engine.jobfile import TOKEN_ENV, load_job
from gcbulk.state.ledger import Ledger
from tests.imaging import make_mha
from tests.planner.conftest import put, put_mhd, write_job


@pytest.fixture
def tutorial_job(job_dir: Path) -> Path:
    put(job_dir / "cases" / "patient1" / "ct.mha", 100)
    put_mhd(job_dir / "cases" / "patient2", "ct")
    put(job_dir / "cases" / "patient2" / "seg.mha", 50)
    return write_job(job_dir)


def test_plan_offline_prints_the_plan_and_records_it(tutorial_job: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(tutorial_job), "--offline"]) == 0
    out = capsys.readouterr().out
    ledger = tutorial_job.with_name("job.ledger.sqlite")
    assert f"Plan for reader study 'example-study' at https://gc.example/api/v1/ (ledger {ledger})" in out
    total = sum(path.stat().st_size for path in (tutorial_job.parent / "cases").rglob("*") if path.is_file())
    assert f"cases 2 · files 4 · {total} B" in out
    assert "new 2 · re-queued 0 · unchanged 0 (done 0)" in out
    assert f"uploads needed: at most 4 files, {total} B" in out
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    assert main(["plan", str(tutorial_job), "--offline"]) == 0
    assert "new 0 · re-queued 0 · unchanged 2 (done 0)" in capsys.readouterr().out


def test_plan_json_report(tutorial_job: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(tutorial_job), "--offline", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["plan"]["cases"], report["plan"]["new_cases"], report["blocking"]) == (2, 2, False)
    assert report["quota"]["uploads"] == 4 and report["quota"]["upload_cap"] == 2000
    assert report["findings"] == []


def test_dry_run_without_a_ledger_creates_none(tutorial_job: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(tutorial_job), "--offline", "--dry-run"]) == 0
    assert "(dry run, nothing written)" in capsys.readouterr().out
    assert sorted(p.name for p in tutorial_job.parent.iterdir()) == ["cases", "job.toml"]


def test_a_blocking_finding_blocks_only_its_case_exit_1(tutorial_job: Path, capsys: pytest.CaptureFixture) -> None:
    empty = put(tutorial_job.parent / "cases" / "patient1" / "extra.mha", content=b"")
    assert main(["plan", str(tutorial_job), "--offline"]) == 1
    out = capsys.readouterr().out
    assert f"BLOCKING [zero-bytes] {empty}" in out
    assert "fix: replace it with the real file, or remove it" in out
    assert "removed 0 · blocked 1" in out and "Blocked cases (1):\n  patient1\n" in out
    assert "1 case(s) are skipped until their blocking findings are fixed; the other 1 case(s) will run" in out
    ledger = Ledger.open_readonly(tutorial_job.with_name("job.ledger.sqlite"), load_job(tutorial_job).binding)
    with ledger:
        assert ledger.plan_state == "complete"
        assert ledger.counts_by_state()["case"] == {"blocked": 1, "planned": 1}


def test_strict_holds_back_every_case_exit_2(tutorial_job: Path, capsys: pytest.CaptureFixture) -> None:
    put(tutorial_job.parent / "cases" / "patient1" / "extra.mha", content=b"")
    assert main(["plan", str(tutorial_job), "--offline", "--strict"]) == 2
    out = capsys.readouterr().out
    assert "(--strict: any blocking finding holds back every case)" in out
    assert "nothing will be uploaded until then" in out
    with Ledger.open_readonly(tutorial_job.with_name("job.ledger.sqlite"), load_job(tutorial_job).binding) as ledger:
        assert ledger.plan_state == "blocked"


def test_token_in_the_job_file_exits_2(job_dir: Path, capsys: pytest.CaptureFixture) -> None:
    job = write_job(job_dir, head='token = "do-not-print-me"')
    assert main(["plan", str(job), "--offline"]) == 2
    err = capsys.readouterr().err
    assert "looks like a credential" in err and "do-not-print-me" not in err


def test_ledger_of_another_job_exits_2(tutorial_job: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "other").mkdir()
    other = write_job(tmp_path / "other")
    ledger = tutorial_job.with_name("job.ledger.sqlite")
    assert main(["plan", str(tutorial_job), "--offline"]) == 0
    assert main(["plan", str(other), "--offline", "--ledger", str(ledger)]) == 2
    assert "belongs to another job: case root is" in capsys.readouterr().err


def test_plan_online_without_a_token_exits_2(tutorial_job: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["plan", str(tutorial_job)]) == 2
    assert f"no API token: set {TOKEN_ENV}" in capsys.readouterr().err


def test_status_counts_and_cases_needing_attention(tutorial_job: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["status", str(tutorial_job)]) == 2
    assert "run 'gcbulk plan' for this job first" in capsys.readouterr().err
    main(["plan", str(tutorial_job), "--offline"])
    capsys.readouterr()
    assert main(["status", str(tutorial_job)]) == 0
    out = capsys.readouterr().out
    assert "(plan complete)" in out and "planned 2" in out and "Nothing needs attention." in out
    config = load_job(tutorial_job)
    with Ledger.open(tutorial_job.with_name("job.ledger.sqlite"), config.binding) as ledger:
        ledger.case_started(1)
        ledger.case_failed(1, "Image validation for socket CT Image failed")
        assert main(["status", str(tutorial_job)]) == 1  # readable while this process holds the ledger
    out = capsys.readouterr().out
    assert "failed   patient1: Image validation for socket CT Image failed" in out
    assert main(["status", str(tutorial_job), "--json"]) == 1
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["case"] == {"failed": 1, "planned": 1}
    assert status["needs_attention"][0]["title"] == "patient1"


def test_status_lists_the_live_workers_of_the_job(tutorial_job: Path, capsys: pytest.CaptureFixture) -> None:
    main(["plan", str(tutorial_job), "--offline"])
    config = load_job(tutorial_job)
    with Ledger.open(tutorial_job.with_name("job.ledger.sqlite"), config.binding) as ledger:
        ledger.register_worker("box-1234", host="box", pid=1234)
        ledger.claim_case("box-1234", lease_seconds=30.0)
        ledger.reserve_units("box-1234", "live uploads", held=2, ceiling=1000, lease_seconds=30.0)
        capsys.readouterr()
        main(["status", str(tutorial_job), "--offline"])
        out = capsys.readouterr().out
        main(["status", str(tutorial_job), "--offline", "--json"])
        workers = json.loads(capsys.readouterr().out)["workers"]
    assert "Workers: 1 live" in out and "box-1234" in out and "1 cases leased" in out and "live uploads 2" in out
    assert workers[0]["worker_id"] == "box-1234" and workers[0]["status"] == "live"


def _emulator_job(job_dir: Path, emulator: RunningEmulator, rules: str | None = None) -> Path:
    head = f'ca_file = "{emulator.ca_file}"'
    return write_job(job_dir, base_url=emulator.base_url, head=head, **({"rules": rules} if rules else {}))


def test_plan_checks_socket_slugs_on_the_server(
    job_dir: Path, threaded_emulator: RunningEmulator, monkeypatch, capsys
) -> None:
    make_mha(job_dir / "cases" / "patient1" / "ct.mha", (2, 4, 4))  # a real image: its header is checked too
    monkeypatch.setenv(TOKEN_ENV, threaded_emulator.tokens["editor"])
    job = _emulator_job(job_dir, threaded_emulator, '[[rules]]\nposition = 1\nsocket = "ct-imag"\n')
    assert main(["plan", str(job)]) == 2
    out = capsys.readouterr().out
    assert f"BLOCKING [unknown-socket] {job}" in out
    assert f"socket 'ct-imag' does not exist on {threaded_emulator.base_url}" in out
    job = _emulator_job(job_dir, threaded_emulator)
    assert main(["plan", str(job)]) == 0
    with Ledger.open_readonly(job.with_name("job.ledger.sqlite")) as ledger:
        assert [item.super_kind for item in ledger.case_work(1).items] == ["Image"]


def test_plan_with_a_bad_token_exits_2(job_dir: Path, threaded_emulator: RunningEmulator, monkeypatch, capsys) -> None:
    put(job_dir / "cases" / "patient1" / "ct.mha")
    token_file = job_dir / "token"
    token_file.write_text("not-a-real-token\n")
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["plan", str(_emulator_job(job_dir, threaded_emulator)), "--token-file", str(token_file)]) == 2
    err = capsys.readouterr().err
    assert "could not check the job's sockets" in err and "--offline" in err
    assert "not-a-real-token" not in err


def test_plan_dry_run_sends_no_request_that_writes_and_says_run_checks_permission(
    job_dir: Path, threaded_emulator: RunningEmulator, monkeypatch, capsys
) -> None:
    """Even with a reader's token: the editor check is a POST the server refuses, so a dry run leaves it to `run`
    (which checks before any file moves) and says so."""
    make_mha(job_dir / "cases" / "patient1" / "ct.mha", (2, 4, 4))
    monkeypatch.setenv(TOKEN_ENV, threaded_emulator.tokens["reader1"])
    job = _emulator_job(job_dir, threaded_emulator)
    threaded_emulator.context.counters.requests.clear()

    assert main(["plan", str(job), "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert "Not checked in a dry run: whether this token may add display sets to the study" in out
    assert "gcbulk run checks it before any file moves" in out
    sent = threaded_emulator.context.counters.requests
    assert sent and all(key.startswith("GET ") for key in sent), sent
    assert not job.with_name("job.ledger.sqlite").exists()

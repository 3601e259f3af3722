"""``gcbulk export`` and ``gcbulk reorder`` from the command line: tokens, exit codes, messages."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

from gcbulk.emulator.objects import IMAGES_BUCKET
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.cli import main
from tests.results.conftest import DISPLAY_SET_PATCH, World

TOKEN_ENV = "GRAND_CHALLENGE_AUTHORIZATION"


@pytest.fixture
def world(threaded_emulator: RunningEmulator, tmp_path: Path) -> World:
    """The study on an emulator in a thread: the commands run their own event loop."""
    world = World(threaded_emulator, tmp_path)
    world.add_display_sets(["case2", "case10", "case1"])
    asyncio.run(world.answer_all(["reader1"]))
    return world


def connection(world: World) -> list[str]:
    return ["--base-url", world.emulator.base_url, "--ca-file", str(world.emulator.ca_file)]


def export_args(world: World, out: Path, *extra: str) -> list[str]:
    return ["export", "--reader-study", "example-study", "--out", str(out), *connection(world), *extra]


def test_export_writes_every_file_and_never_the_token(world: World, tmp_path: Path, monkeypatch, capsys):
    token = world.emulator.tokens["editor"]
    monkeypatch.setenv(TOKEN_ENV, f"Bearer {token}")
    out = tmp_path / "out"

    assert main(export_args(world, out)) == 0

    printed = capsys.readouterr()
    assert "answers: 24 (24 new" in printed.out and "masks: 3 downloaded" in printed.out
    for name in ("answers.csv", "answers.jsonl", "answers_per_case.csv", "questions.json", "display_sets.csv"):
        assert (out / name).is_file()
    everything = [printed.out, printed.err] + [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()]
    assert not any(token in text for text in everything)
    assert (out / ".gcbulk" / "ledger.sqlite").stat().st_mode & 0o077 == 0


def test_token_file_is_read(world: World, tmp_path: Path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(world.emulator.tokens["reader1"] + "\n")

    assert main(export_args(world, tmp_path / "out", "--token-file", str(token_file), "--mine")) == 0

    with (tmp_path / "out" / "answers.csv").open(newline="") as handle:
        assert {row["creator"] for row in csv.DictReader(handle)} == {"reader1"}


def test_export_without_a_token_exits_2_and_says_how_to_give_one(world: World, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv(TOKEN_ENV, raising=False)

    assert main(export_args(world, tmp_path / "out")) == 2

    assert "no API token: set GRAND_CHALLENGE_AUTHORIZATION, or GCBULK_TOKEN_FILE" in capsys.readouterr().err


def test_empty_token_file_exits_2(world: World, tmp_path: Path, capsys):
    (tmp_path / "token").write_text("\n")

    assert main(export_args(world, tmp_path / "out", "--token-file", str(tmp_path / "token"))) == 2

    assert "is empty; put your Grand Challenge API token in it" in capsys.readouterr().err


def test_rejected_token_exits_2(world: World, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, "not-a-token")

    assert main(export_args(world, tmp_path / "out")) == 2

    err = capsys.readouterr().err
    assert "refused the API token (401)" in err and "not-a-token" not in err


def test_unknown_study_exits_2_naming_it(world: World, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, world.emulator.tokens["outsider"])

    assert main(export_args(world, tmp_path / "out")) == 2

    assert "reader study 'example-study' was not found" in capsys.readouterr().err


def test_failed_mask_exits_1_and_a_rerun_finishes(world: World, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, world.emulator.tokens["editor"])
    image = next(iter(world.store.images.values()))
    stored = world.context.objects.object_path(IMAGES_BUCKET, image.files[0].object_key)
    content = stored.read_bytes()
    stored.unlink()

    assert main(export_args(world, tmp_path / "out")) == 1
    assert "masks: 2 downloaded" in capsys.readouterr().out

    stored.write_bytes(content)
    assert main(export_args(world, tmp_path / "out")) == 0
    assert "masks: 1 downloaded (0 resumed), 2 already present, 0 failed" in capsys.readouterr().out


def test_reorder_by_natural_title(world: World, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, world.emulator.tokens["editor"])
    for display_set in world.display_sets:  # answers lock display sets (docs/gc-api.md §3): start from a fresh study
        for answer in [a for a in world.store.answers.values() if a.display_set_pk == display_set.pk]:
            del world.store.answers[answer.pk]
    ledger = tmp_path / "reorder.sqlite"

    args = [
        "reorder",
        "--reader-study",
        "example-study",
        "--by",
        "natural-title",
        "--ledger",
        str(ledger),
        *connection(world),
    ]
    assert main(args) == 0

    assert "reordered now: 3" in capsys.readouterr().out
    assert {ds.title: ds.order for ds in world.display_sets} == {"case1": 10, "case2": 20, "case10": 30}
    assert main(args) == 0
    assert "already at their target order: 3" in capsys.readouterr().out


def test_reorder_of_answered_display_sets_exits_1_with_the_reason(world: World, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, world.emulator.tokens["editor"])

    code = main(
        [
            "reorder",
            "--reader-study",
            "example-study",
            "--by",
            "title",
            "--ledger",
            str(tmp_path / "r.sqlite"),
            *connection(world),
        ]
    )

    assert code == 1
    out = capsys.readouterr().out
    assert out.startswith("reorder refused: nothing was changed")
    assert "has answers: Grand Challenge does not change a display set that has answers" in out
    assert {ds.title: ds.order for ds in world.display_sets} == {"case2": 10, "case10": 20, "case1": 30}
    assert not (tmp_path / "r.sqlite").exists()


def test_reorder_dry_run_shows_the_plan_and_changes_nothing(world: World, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, world.emulator.tokens["editor"])
    args = ["reorder", "--reader-study", "example-study", "--by", "natural-title", "--dry-run", *connection(world)]

    assert main([*args, "--skip-answered"]) == 0  # every display set has answers: all are kept where they are
    out = capsys.readouterr().out
    assert "display sets in the plan: 0 (dry run: nothing was changed)" in out
    assert "  kept at its order (has answers): case10 (20)" in out

    for answer in list(world.store.answers.values()):
        del world.store.answers[answer.pk]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "  would be reordered: 3\n    case1: 30 → 10\n    case2: 10 → 20\n    case10: 20 → 30\n" in out
    assert {ds.title: ds.order for ds in world.display_sets} == {"case2": 10, "case10": 20, "case1": 30}
    assert world.requests(DISPLAY_SET_PATCH) == 0


def test_reorder_keeps_its_state_beside_the_jobs_ledger_not_in_the_current_folder(
    world: World, tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.setenv(TOKEN_ENV, world.emulator.tokens["editor"])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for answer in list(world.store.answers.values()):
        del world.store.answers[answer.pk]
    job = tmp_path / "jobs" / "study.toml"
    job.parent.mkdir()
    job.write_text(
        f'reader_study = "example-study"\nbase_url = "{world.emulator.base_url}"\ncase_root = "cases"\n'
        f'ca_file = "{world.emulator.ca_file}"\n\n[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n'
    )

    assert main(["reorder", "--job", str(job), "--by", "natural-title"]) == 0

    assert (tmp_path / "jobs" / "study.reorder.sqlite").exists()  # beside study.ledger.sqlite
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert [ds.title for ds in sorted(world.display_sets, key=lambda ds: ds.order)] == ["case1", "case2", "case10"]


def test_reorder_with_a_readers_token_changes_nothing_and_says_the_user_must_be_an_editor(
    world: World, tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.setenv(TOKEN_ENV, world.emulator.tokens["reader1"])
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    assert main(["reorder", "--reader-study", "example-study", "--by", "title", *connection(world)]) == 2

    assert "must be an editor of the study" in capsys.readouterr().err
    assert world.requests(DISPLAY_SET_PATCH) == 0


def test_unreadable_token_file_exits_2_naming_it(world: World, tmp_path: Path, capsys):
    assert main(export_args(world, tmp_path / "out", "--token-file", str(tmp_path))) == 2

    assert f"token file {tmp_path} cannot be read: Is a directory" in capsys.readouterr().err


def test_missing_ca_file_exits_2(world: World, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, world.emulator.tokens["editor"])
    args = [
        "export",
        "--reader-study",
        "example-study",
        "--out",
        str(tmp_path / "out"),
        "--base-url",
        world.emulator.base_url,
        "--ca-file",
        str(tmp_path / "nope.pem"),
    ]

    assert main(args) == 2

    assert "the CA file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--out", "x", "--mask-downloads", "0"], "--mask-downloads must be at least 1"),
        (["reorder", "--by", "title", "--concurrency", "0"], "--concurrency must be at least 1"),
    ],
)
def test_bad_concurrency_exits_2(args: list[str], message: str, capsys):
    assert main([args[0], "--reader-study", "s", *args[1:]]) == 2

    assert message in capsys.readouterr().err


def test_export_takes_server_ca_and_study_from_a_job_file(world: World, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, world.emulator.tokens["editor"])
    job = tmp_path / "job.toml"
    job.write_text(
        f'reader_study = "example-study"\nbase_url = "{world.emulator.base_url}"\ncase_root = "cases"\n'
        f'ca_file = "{world.emulator.ca_file}"\n\n[[rules]]\nglob = "ct.mha"\nsocket = "ct-image"\n'
    )

    assert main(["export", "--job", str(job), "--out", str(tmp_path / "out"), "--no-masks"]) == 0

    assert (tmp_path / "out" / "answers.csv").exists()
    assert not (tmp_path / "out" / "masks").exists()
    assert "using https://grand-challenge.org" not in capsys.readouterr().err


def test_reorder_reads_the_server_from_the_environment_as_run_does(
    threaded_emulator: RunningEmulator, tmp_path: Path, monkeypatch
):
    world = World(threaded_emulator, tmp_path)
    world.add_display_sets(["case2", "case10", "case1"])
    monkeypatch.setenv(TOKEN_ENV, threaded_emulator.tokens["editor"])
    monkeypatch.setenv("GCBULK_BASE_URL", threaded_emulator.base_url)
    monkeypatch.setenv("GCBULK_CA_FILE", str(threaded_emulator.ca_file))
    monkeypatch.setenv("GCBULK_READER_STUDY", "example-study")

    assert main(["reorder", "--by", "natural-title", "--ledger", str(tmp_path / "r.sqlite")]) == 0

    assert [ds.title for ds in sorted(world.display_sets, key=lambda ds: ds.order)] == ["case1", "case2", "case10"]


def test_export_with_no_server_named_says_it_uses_the_public_grand_challenge(tmp_path: Path, monkeypatch, capsys):
    for name in (TOKEN_ENV, "GCBULK_BASE_URL", "GCBULK_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)

    assert main(["export", "--reader-study", "s", "--out", str(tmp_path / "out")]) == 2

    err = capsys.readouterr().err
    assert "using https://grand-challenge.org/api/v1/ (no --base-url, GCBULK_BASE_URL or --job given)" in err
    assert "no API token" in err  # and nothing was sent: no token, no request


def test_export_folders_and_sub_folders_are_private(world: World, tmp_path: Path, monkeypatch):
    """masks/<case title>/ names cases (often patient identifiers): no other user may list any export folder, even
    under the usual umask, and a sub-folder an older version made 0755 is tightened."""
    import os
    import stat

    monkeypatch.setenv(TOKEN_ENV, world.emulator.tokens["editor"])
    out = tmp_path / "out"
    (out / "masks" / "case1").mkdir(parents=True, mode=0o755)
    old_umask = os.umask(0o022)
    try:
        assert main(export_args(world, out)) == 0
    finally:
        os.umask(old_umask)

    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert any(p.parent.name == "masks" for p in folders)  # masks/<case title>/ is among them
    assert {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {
        str(p.relative_to(tmp_path)): oct(0o700) for p in folders
    }


def test_a_token_file_others_can_read_is_used_with_a_warning(world: World, tmp_path: Path, monkeypatch, caplog):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(world.emulator.tokens["reader1"] + "\n")
    token_file.chmod(0o644)

    assert main(export_args(world, tmp_path / "out", "--token-file", str(token_file), "--mine")) == 0

    assert f"token file {token_file} is readable by every user of this machine (mode 0o644)" in caplog.text
    assert f"chmod 600 {token_file}" in caplog.text
    assert world.emulator.tokens["reader1"] not in caplog.text
    caplog.clear()
    token_file.chmod(0o600)
    assert main(export_args(world, tmp_path / "out", "--token-file", str(token_file), "--mine")) == 0
    assert "readable by every user" not in caplog.text

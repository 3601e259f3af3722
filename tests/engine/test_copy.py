"""``gcbulk copy``: an archive's items into a reader study (and back), each image named by its API URL — no part PUT,
no upload — planned into a ledger, resumable after kill -9 with no duplicate display set, adopting only its own.

The source archive is filled as a user would: two tutorial cases uploaded by ``gcbulk run`` into the archive, then
items that show the same images (an archive item's values may name images the user may view, docs/gc-api.md §12).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from gcbulk.emulator.context import EmulatorConfig
from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.server import RunningEmulator, emulator_in_thread
from gcbulk.engine.cli import main
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.gc.target_ref import ARCHIVE, TargetRef
from gcbulk.engine.gc.targets import target_for
from gcbulk.engine.upload.crashpoints import ENV_VAR
from tests.engine.conftest import FAST_RETRIES, make_tutorial_tree
from tests.engine.test_archive_target import archive_job, items_of_archive
from tests.engine.test_run_command import gcbulk

STUDY = "example-study"
SOCKETS = ("ct-image", "airway-segmentation")
REPO = Path(__file__).parents[2]


def fill_archive(directory: Path, emulator: RunningEmulator, cases: int) -> None:
    """``cases`` archive items titled patient1…: two uploaded by ``gcbulk run``, the rest showing their images."""
    make_tutorial_tree(directory / "cases", 2)
    uploaded = gcbulk("run", str(archive_job(directory, emulator)), token=emulator.tokens["editor"])
    assert uploaded.returncode == 0, uploaded.stderr

    async def add_items() -> None:
        with anyio.fail_after(120):
            await _add_items()

    async def _add_items() -> None:
        async with GrandChallengeClient(
            base_url=emulator.base_url,
            token=emulator.tokens["editor"],
            ca_file=emulator.ca_file,
            retry_policy=FAST_RETRIES,
        ) as client:
            archive = target_for(client, TargetRef(ARCHIVE, "example-archive"))
            images = {}
            async for item in archive.iterate_containers():
                images[item["title"]] = [
                    {"interface": v["interface"]["slug"], "image": v["image"]} for v in item["values"]
                ]
            for n in range(3, cases + 1):
                created = await archive.create(f"patient{n}", None)
                await archive.update(created["pk"], values=images[f"patient{1 + n % 2}"])

    anyio.run(add_items)
    assert len(items_of_archive(emulator)) == cases


def copy_job(directory: Path, emulator: RunningEmulator, extra: str = "") -> Path:
    job = directory / "copy.toml"
    job.write_text(
        f'base_url = "{emulator.base_url}"\nca_file = "{emulator.ca_file}"\n'
        f'from = "archive:example-archive"\nto = "reader-study:{STUDY}"\n{extra}\n'
    )
    return job


def copy_command(
    job: Path, emulator: RunningEmulator, *args: str, crash_at: str | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["GRAND_CHALLENGE_AUTHORIZATION"] = emulator.tokens["editor"]
    if crash_at:
        env[ENV_VAR] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "gcbulk", "copy", str(job), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def study_images(emulator: RunningEmulator) -> dict[str, dict[str, str | None]]:
    return {
        ds.title: {slug: value.image_pk for slug, value in ds.values.items()}
        for ds in emulator.context.store.display_sets.values()
    }


def archive_images(emulator: RunningEmulator) -> dict[str, dict[str, str | None]]:
    return {item.title: {slug: v.image_pk for slug, v in item.values.items()} for item in items_of_archive(emulator)}


def test_a_copy_of_100_archive_items_into_a_reader_study_sends_no_part_put(
    tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    fill_archive(tmp_path, threaded_emulator, 100)
    counters = threaded_emulator.context.counters
    counters.reset()
    job = copy_job(tmp_path, threaded_emulator)

    dry = copy_command(job, threaded_emulator, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (
        "archive 'example-archive' → reader study 'example-study': 100 case(s); would create 100 display set(s)"
        in dry.stdout
    )
    assert "  create patient1 ← archive item " in dry.stdout
    assert not threaded_emulator.context.store.display_sets and not job.with_name("copy.ledger.sqlite").exists()

    copied = copy_command(job, threaded_emulator)
    assert copied.returncode == 0, copied.stderr
    assert "100 case(s) copied this run, 0 failed, 0 blocked (of 100 planned)" in copied.stderr
    assert study_images(threaded_emulator) == archive_images(threaded_emulator), "each value names the source's image"
    assert not counters.part_puts and not counters.part_put_attempts, "no byte was sent"
    assert counters.requests["POST api:/api/v1/uploads/"] == 0
    assert counters.requests["POST api:/api/v1/cases/upload-sessions/"] == 0

    again = copy_command(job, threaded_emulator)
    assert again.returncode == 0, again.stderr
    assert "0 case(s) copied this run, 0 failed, 0 blocked (of 100 planned)" in again.stderr
    assert len(threaded_emulator.context.store.display_sets) == 100


@pytest.mark.parametrize(
    "crash_at", ["after-display-set-intent:2", "after-create-display-set:3", "after-values-patch:2"]
)
def test_a_copy_killed_with_kill_9_resumes_without_a_duplicate_display_set(
    crash_at: str, tmp_path: Path, threaded_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_archive(tmp_path, threaded_emulator, 6)
    job = copy_job(tmp_path, threaded_emulator)
    killed = copy_command(job, threaded_emulator, crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", threaded_emulator.tokens["editor"])
    assert main(["copy", str(job)]) == 0
    titles = Counter(ds.title for ds in threaded_emulator.context.store.display_sets.values())
    assert titles == Counter(f"patient{n}" for n in range(1, 7)), "exactly one display set per source item"
    assert study_images(threaded_emulator) == archive_images(threaded_emulator)


def test_a_copy_fills_no_display_set_it_did_not_make_and_says_which(
    tmp_path: Path,
    threaded_emulator: RunningEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill_archive(tmp_path, threaded_emulator, 3)

    async def someone_elses() -> None:
        async with GrandChallengeClient(
            base_url=threaded_emulator.base_url,
            token=threaded_emulator.tokens["editor"],
            ca_file=threaded_emulator.ca_file,
        ) as client:
            await client.create_display_set(STUDY, "patient2")

    anyio.run(someone_elses)
    job = copy_job(tmp_path, threaded_emulator, 'include = ["patient*"]\nexclude = ["patient3"]\ntitle = "{title}"')
    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", threaded_emulator.tokens["editor"])
    assert main(["copy", str(job)]) == 1
    err = capsys.readouterr().err
    assert "1 case(s) copied this run, 1 failed, 0 blocked (of 2 planned)" in err
    assert "failed patient2: reader study 'example-study' already has a display set titled 'patient2'" in err
    store = threaded_emulator.context.store
    assert sorted(ds.title for ds in store.display_sets.values()) == ["patient1", "patient2"]
    assert not next(ds for ds in store.display_sets.values() if ds.title == "patient2").values

    assert main(["copy", str(job), "--status"]) == 1  # from the ledger alone
    status = capsys.readouterr().out
    assert "done 1" in status and "failed 1" in status
    assert "already has a display set titled 'patient2'" in status


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "archive"], "'archive' is not a target: write archive:SLUG or reader-study:SLUG"),
        (["--to", "archive:example-archive"], "from and to are both archive:example-archive"),
        (["--from", "archive:no-such-archive"], "archive 'no-such-archive' was not found"),
    ],
)
def test_a_copy_that_cannot_start_says_why_and_exits_2(
    args: list[str], message: str, tmp_path: Path, threaded_emulator: RunningEmulator
) -> None:
    result = copy_command(copy_job(tmp_path, threaded_emulator), threaded_emulator, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_python_api_builds_a_reader_study_from_an_archive_and_an_archive_back_from_it(
    tmp_path: Path, threaded_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gcbulk

    fill_archive(tmp_path, threaded_emulator, 3)
    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", threaded_emulator.tokens["editor"])
    job = copy_job(tmp_path, threaded_emulator)

    preview = gcbulk.copy(job, dry_run=True)
    assert [case.title for case in preview.to_create] == ["patient1", "patient2", "patient3"]
    outcome = gcbulk.copy(job)
    assert (outcome.run.done, outcome.run.failed) == (3, [])
    assert study_images(threaded_emulator) == archive_images(threaded_emulator)

    back = tmp_path / "back"
    back.mkdir()
    reverse = copy_job(back, threaded_emulator, 'title = "copy-{title}"')
    returned = gcbulk.copy(reverse, source=f"reader-study:{STUDY}", target="archive:example-archive")
    assert returned.run.done == 3
    items = archive_images(threaded_emulator)
    assert {title: items[f"copy-{title}"] for title in ("patient1", "patient2", "patient3")} == study_images(
        threaded_emulator
    )
    assert len(items) == 6


def test_an_image_the_user_may_not_view_fails_its_case_with_that_reason_and_the_rest_is_copied(
    tmp_path: Path,
    threaded_emulator: RunningEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill_archive(tmp_path, threaded_emulator, 3)
    store = threaded_emulator.context.store
    # patient3's CT becomes an image the editor may not view: another user's, shown nowhere the editor is a member.
    hidden = next(item for item in items_of_archive(threaded_emulator) if item.title == "patient3")
    image = store.images[hidden.values["ct-image"].image_pk]
    outsider = store.user_by_username("outsider")
    assert outsider is not None
    image.creator, image.archive_pks, image.reader_study_pks = outsider, set(), set()

    monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", threaded_emulator.tokens["editor"])
    assert main(["copy", str(copy_job(tmp_path, threaded_emulator, 'include = ["patient3"]'))]) == 1
    err = capsys.readouterr().err
    assert "0 case(s) copied this run, 1 failed" in err
    assert "failed patient3: " in err
    assert "the server refused the image named for ct-image: it has no such image, or this user may not view it" in err
    assert "removed by the server before they were attached" not in err


def test_a_copy_from_another_server_moves_the_images_through_this_machine_and_resumes_without_resending(
    tmp_path: Path,
    threaded_emulator: RunningEmulator,
    emulator_config: EmulatorConfig,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = threaded_emulator
    fill_archive(tmp_path / "source", source, 3)
    source_images = _image_shapes_of_archive(source)
    source.context.counters.reset()
    second = dataclasses.replace(emulator_config, data_dir=tmp_path / "second-server")
    with emulator_in_thread(second) as target:
        job = _cross_server_copy_job(tmp_path, source, target)
        monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", target.tokens["editor"])
        monkeypatch.delenv("GCBULK_FROM_AUTHORIZATION", raising=False)
        assert main(["copy", str(job)]) == 2
        assert "give its API token in GCBULK_FROM_AUTHORIZATION or a file named by --from-token-file" in (
            capsys.readouterr().err
        )

        monkeypatch.setenv("GCBULK_FROM_AUTHORIZATION", source.tokens["editor"])
        assert main(["copy", str(job)]) == 0, capsys.readouterr().err
        assert "another server: its images are downloaded, then uploaded" in capsys.readouterr().err
        copied = _image_shapes_of_study(target)
        assert copied == source_images, "each image imported on the second server, as it was on the first"
        puts = dict(target.context.counters.part_puts)
        assert len(puts) == 6 and set(puts.values()) == {1}, "each of the six files uploaded once"
        assert not source.context.counters.part_puts, "nothing was sent to the source"
        assert len(_staged_files(tmp_path / "copy.copy-files")) == 6

        assert main(["copy", str(job)]) == 0
        assert dict(target.context.counters.part_puts) == puts, "a second run sends nothing again"
        assert len(target.context.store.display_sets) == 3


def test_a_copy_across_servers_killed_with_kill_9_mid_upload_resumes_without_resending_parts(
    tmp_path: Path, threaded_emulator: RunningEmulator, emulator_config: EmulatorConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = threaded_emulator
    fill_archive(tmp_path / "source", source, 3)
    with emulator_in_thread(dataclasses.replace(emulator_config, data_dir=tmp_path / "second-server")) as target:
        job = _cross_server_copy_job(tmp_path, source, target)
        env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
        env.update(
            GRAND_CHALLENGE_AUTHORIZATION=target.tokens["editor"],
            GCBULK_FROM_AUTHORIZATION=source.tokens["editor"],
            **{ENV_VAR: "after-part-recorded:3"},
        )
        killed = subprocess.run(
            [sys.executable, "-m", "gcbulk", "copy", str(job)], env=env, capture_output=True, text=True, timeout=300
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr

        monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", target.tokens["editor"])
        monkeypatch.setenv("GCBULK_FROM_AUTHORIZATION", source.tokens["editor"])
        assert main(["copy", str(job)]) == 0
        titles = Counter(ds.title for ds in target.context.store.display_sets.values())
        assert titles == Counter(["patient1", "patient2", "patient3"])
        assert all(set(ds.values) == set(SOCKETS) for ds in target.context.store.display_sets.values())
        part_puts = target.context.counters.part_puts
        assert len(part_puts) == 6 and set(part_puts.values()) == {1}, f"parts sent again: {dict(part_puts)}"


@dataclasses.dataclass(frozen=True)
class CrossServer:
    """A source server whose example archive holds two items, a second server to copy them to, and the job."""

    source: RunningEmulator
    target: RunningEmulator
    job: Path


@pytest.fixture
def cross_server(
    tmp_path: Path, threaded_emulator: RunningEmulator, emulator_config: EmulatorConfig, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CrossServer]:
    """Two servers with the copy's tokens in the environment (the target's, and the source's for its downloads)."""
    source = threaded_emulator
    fill_archive(tmp_path / "source", source, 2)
    with emulator_in_thread(dataclasses.replace(emulator_config, data_dir=tmp_path / "second-server")) as target:
        monkeypatch.setenv("GRAND_CHALLENGE_AUTHORIZATION", target.tokens["editor"])
        monkeypatch.setenv("GCBULK_FROM_AUTHORIZATION", source.tokens["editor"])
        yield CrossServer(source, target, _cross_server_copy_job(tmp_path, source, target))


def test_a_download_from_the_source_cut_mid_file_resumes_from_where_it_stopped(
    tmp_path: Path, cross_server: CrossServer
) -> None:
    source, target = cross_server.source, cross_server.target
    source_images = _image_shapes_of_archive(source)
    # The source's object store drops the connection half-way through the first file it sends.
    source.context.faults.replace([FaultRule(match="GET s3", reset="response", reset_at_fraction=0.5, times=1)])
    source.context.counters.reset()
    assert main(["copy", str(cross_server.job)]) == 0
    assert len(_staged_files(tmp_path / "copy.copy-files")) == 4
    gets = source.context.counters.requests["GET s3:/{bucket}/{key}"]
    assert gets == 5, "four files, one of them asked for again from where the cut left it"
    copied = _image_shapes_of_study(target)
    assert copied == source_images, "each image imported whole on the second server"


def test_a_source_file_that_cannot_be_downloaded_stops_the_copy_with_exit_1_and_why_and_a_rerun_finishes(
    cross_server: CrossServer, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = cross_server.source, cross_server.target
    # The source's object store refuses every file it is asked for (a 403 is not retried: it will not change).
    source.context.faults.replace([FaultRule(match="GET s3", status=403)])
    assert main(["copy", str(cross_server.job)]) == 1
    err = capsys.readouterr().err
    assert "gcbulk copy: could not download " in err and f"from {source.base_url}" in err
    assert "run the copy again: whole files stay staged, the rest resumes" in err
    assert not target.context.counters.part_puts and not target.context.store.display_sets, "nothing copied"

    source.context.faults.replace([])
    assert main(["copy", str(cross_server.job)]) == 0
    assert _image_shapes_of_study(target) == _image_shapes_of_archive(source)


def _staged_files(staging: Path) -> list[Path]:
    """The image files a copy staged (its own bookkeeping, ``.gcbulk/``, aside); never a partial download."""
    files = [p for p in staging.rglob("*") if p.is_file() and ".gcbulk" not in p.relative_to(staging).parts]
    assert not any(p.name.endswith(".part") for p in files)
    return files


def _cross_server_copy_job(directory: Path, source: RunningEmulator, target: RunningEmulator) -> Path:
    """A copy job of the source's example archive into the target's example study, on two servers."""
    job = directory / "copy.toml"
    job.write_text(
        f'base_url = "{target.base_url}"\nca_file = "{target.ca_file}"\n'
        f'from_base_url = "{source.base_url}"\nfrom_ca_file = "{source.ca_file}"\n'
        f'from = "archive:example-archive"\nto = "reader-study:{STUDY}"\n'
    )
    return job


def _image_shapes_of_archive(server: RunningEmulator) -> dict[str, dict[str, object]]:
    """Item title → socket → the shape of its image, as the server stores it."""
    return {
        item.title: {slug: server.context.store.images[v.image_pk].shape for slug, v in item.values.items()}
        for item in items_of_archive(server)
    }


def _image_shapes_of_study(server: RunningEmulator) -> dict[str, dict[str, object]]:
    """Display-set title → socket → the shape of its image, as the server stores it."""
    return {
        ds.title: {slug: server.context.store.images[v.image_pk].shape for slug, v in ds.values.items()}
        for ds in server.context.store.display_sets.values()
    }

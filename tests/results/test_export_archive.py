"""``gcbulk export --archive``: an archive's items into a case tree that ``gcbulk plan`` reads back (issue 27).

Items go into the emulator's archive the ways a user puts them there (docs/gc-api.md §12): gcapi 0.16.1's own
``add_case_to_archive`` (an item with a title; images, a JSON value and files through a values PATCH) and an upload
session aimed at the archive (an untitled item per image). The export is then planned back with the job file it
wrote, and what the plan would send is compared with what the archive holds.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import gcapi
import numpy as np
import pytest
import SimpleITK as sitk

import gcbulk
from gcbulk.emulator.faults import FaultRule
from gcbulk.emulator.objects import IMAGES_BUCKET
from gcbulk.emulator.server import RunningEmulator
from gcbulk.emulator.store import ArchiveItem
from gcbulk.engine.cli import main
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.results.archive_export import ArchiveExportOptions, export_archive
from gcbulk.state.results_ledger import ExportFolderTaken, ResultsLedger
from tests.emulator.conftest import gcapi_client
from tests.emulator.test_gcapi_end_to_end import eventually
from tests.imaging import make_mask, make_mha

ARCHIVE = "example-archive"
TOKEN_ENV = "GRAND_CHALLENGE_AUTHORIZATION"
S3_GET = "GET s3:/{bucket}/{key}"
POINTS = {
    "type": "Multiple points",
    "points": [{"point": [1.0, 2.0, 0.0]}, {"point": [3.0, 4.0, 0.0]}],
    "version": {"major": 1, "minor": 0},
}
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
# A title that is no file name: a parent reference, separators and characters Windows refuses.
HOSTILE_TITLE = "../scan: 2/3 *"


def _noise_mha(path: Path, shape: tuple[int, ...]) -> Path:
    """An image of random voxels: the importer's compression cannot shrink it (the ramps of tests/imaging.py shrink
    a hundredfold), so its download takes as many object-store blocks as its size says."""
    voxels = np.random.default_rng(9).integers(-1000, 1000, size=shape, dtype=np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(voxels), str(path))
    return path


def _items(emulator: RunningEmulator) -> list[ArchiveItem]:
    store = emulator.context.store
    archive = store.archive_by_slug(ARCHIVE)
    return [item for item in store.archive_items.values() if item.archive_pk == archive.pk]


def _wait_for_values(emulator: RunningEmulator, expected: dict[str, set[str]], untitled: int) -> None:
    def done() -> bool | None:
        items = _items(emulator)
        titled = {item.title: set(item.values) for item in items if item.title}
        bare = [item for item in items if not item.title and item.values]
        return True if titled == expected and len(bare) == untitled else None

    eventually(done, "the archive items' imports")


def _session_into_archive(client: gcapi.Client, image: Path) -> None:
    """An upload session aimed at the archive (no item): the server makes one untitled item per image (§12)."""
    with image.open("rb") as handle:
        upload = client.uploads.upload_fileobj(fileobj=handle, filename=image.name)
    client(method="POST", path="cases/upload-sessions/", json={"uploads": [upload.api_url], "archive": ARCHIVE})


@pytest.fixture
def filled_archive(threaded_emulator: RunningEmulator, tmp_path: Path) -> RunningEmulator:
    """Two titled items (every kind of value; one with a hostile title) and one untitled item."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    ct = make_mha(inputs / "ct.mha", (4, 16, 16), seed=1)
    seg = make_mask(inputs / "seg.mha", (4, 16, 16), seed=2)
    (inputs / "report.pdf").write_bytes(PDF)
    (inputs / "points.json").write_text(json.dumps(POINTS))
    with gcapi_client(threaded_emulator, "editor") as editor:
        _add_items(editor, inputs, ct, seg)
    _wait_for_values(
        threaded_emulator,
        {
            "case 1": {"ct-image", "airway-segmentation", "patient-age", "report-pdf", "nodule-points"},
            HOSTILE_TITLE: {"ct-image", "clinical-notes"},
        },
        untitled=1,
    )
    return threaded_emulator


def _add_items(editor: gcapi.Client, inputs: Path, ct: Path, seg: Path) -> None:
    editor.add_case_to_archive(
        archive_slug=ARCHIVE,
        title="case 1",
        values=[
            gcapi.SocketValueSpec(socket_slug="ct-image", file=ct),
            gcapi.SocketValueSpec(socket_slug="airway-segmentation", file=seg),
            gcapi.SocketValueSpec(socket_slug="patient-age", value=61),
            gcapi.SocketValueSpec(socket_slug="report-pdf", file=inputs / "report.pdf"),
            gcapi.SocketValueSpec(socket_slug="nodule-points", file=inputs / "points.json"),
        ],
    )
    editor.add_case_to_archive(
        archive_slug=ARCHIVE,
        title=HOSTILE_TITLE,
        values=[
            gcapi.SocketValueSpec(socket_slug="ct-image", file=make_mha(inputs / "ct2.mha", (4, 16, 16), seed=3)),
            gcapi.SocketValueSpec(socket_slug="clinical-notes", value={"source": "scanner A", "dose": [1, 2.5]}),
        ],
    )
    _session_into_archive(editor, make_mha(inputs / "ct3.mha", (4, 16, 16), seed=4))


def _part_sizes(partial: Path) -> list[int]:
    """The sizes of the downloads in progress; a file that finished (renamed into place) while listing is skipped."""
    sizes = []
    for part in partial.glob("*.part"):
        try:
            sizes.append(part.stat().st_size)
        except FileNotFoundError:
            pass
    return sizes


def _archive(emulator: RunningEmulator, user: str = "editor") -> gcbulk.Archive:
    return gcbulk.Archive(
        ARCHIVE, base_url=emulator.base_url, token=emulator.tokens[user], ca_file=emulator.ca_file, environ={}
    )


def _object_bytes(emulator: RunningEmulator, image_pk: str) -> bytes:
    context = emulator.context
    image = context.store.images[image_pk]
    return context.objects.object_path(IMAGES_BUCKET, image.files[0].object_key).read_bytes()


def _file_value_bytes(emulator: RunningEmulator, item: ArchiveItem, socket: str) -> bytes:
    key = item.values[socket].file_key
    return emulator.context.objects.object_path(IMAGES_BUCKET, key).read_bytes()


def _plan_json(job_file: Path, emulator: RunningEmulator, monkeypatch, capsys) -> dict[str, Any]:
    """``gcbulk plan JOB --dry-run --json`` against the emulator, the target study named by the environment."""
    monkeypatch.setenv(TOKEN_ENV, emulator.tokens["editor"])
    monkeypatch.setenv("GCBULK_READER_STUDY", "example-study")
    monkeypatch.setenv("GCBULK_METRICS_ADDRESS", "off")
    capsys.readouterr()
    code = main(["plan", str(job_file), "--dry-run", "--json"])
    printed = capsys.readouterr()
    assert code == 0, printed.err + printed.out
    return json.loads(printed.out)


def test_exported_archive_plans_back_to_the_same_cases_sockets_and_bytes(
    filled_archive: RunningEmulator, tmp_path: Path, monkeypatch, capsys
):
    emulator = filled_archive
    out = tmp_path / "out"

    summary = _archive(emulator).export(out)

    assert summary.failures == []
    items = {item.pk: item for item in _items(emulator)}
    assert {exported.pk for exported in summary.items} == set(items)
    untitled = next(item for item in items.values() if not item.title)
    folders = {exported.title or exported.folder: exported.folder for exported in summary.items}
    assert folders["case 1"] == "case 1"
    assert folders[f"item-{untitled.pk}"] == f"item-{untitled.pk}"
    hostile_folder = folders[HOSTILE_TITLE]
    assert "/" not in hostile_folder and "\x1b" not in hostile_folder and not hostile_folder.startswith(".")

    plan = _plan_json(summary.job_file, emulator, monkeypatch, capsys)

    assert plan["findings"] == []
    planned = {case["title"]: case for case in plan["cases"]}
    expected_titles = {item.title or f"item-{pk}" for pk, item in items.items()}
    assert set(planned) == expected_titles
    for pk, item in items.items():
        case = planned[item.title or f"item-{pk}"]
        assert not case["blocked"]
        assert set(case["sockets"]) == set(item.values), case
        folder = out / "cases" / case["folder"]
        for socket, value in item.values.items():
            if value.image_pk:  # byte-identical to what the archive serves
                (path,) = case["sockets"][socket]
                assert (summary.case_root / path).read_bytes() == _object_bytes(emulator, value.image_pk)
            elif value.file_key:
                (path,) = case["sockets"][socket]
                assert (summary.case_root / path).read_bytes() == _file_value_bytes(emulator, item, socket)
            else:  # a JSON value comes back as the value the plan sends
                assert case["sockets"][socket] == {"value_from": f"{case['folder']}/{socket}.json"}
                assert json.loads((folder / f"{socket}.json").read_text()) == value.value
    assert json.loads((out / "cases" / "case 1" / "nodule-points.json").read_text()) == POINTS


def test_export_folders_are_private_and_a_rerun_downloads_nothing_again(filled_archive: RunningEmulator, tmp_path):
    emulator = filled_archive
    out = tmp_path / "out"
    first = _archive(emulator).export(out)
    gets = emulator.context.counters.requests[S3_GET]

    again = _archive(emulator).export(out)

    assert first.files.downloaded == 6 and again.files.downloaded == 0 and again.files.skipped == 6
    assert again.values_written == 0 and again.values_unchanged == 2
    assert emulator.context.counters.requests[S3_GET] == gets
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))


def test_a_file_changed_on_disk_is_downloaded_again(filled_archive: RunningEmulator, tmp_path):
    emulator = filled_archive
    out = tmp_path / "out"
    _archive(emulator).export(out)
    ct = out / "cases" / "case 1" / "ct-image.mha"
    original = ct.read_bytes()
    ct.write_bytes(b"x" * len(original))

    again = _archive(emulator).export(out)

    assert again.files.downloaded == 1 and ct.read_bytes() == original


def test_a_user_who_may_not_view_the_archive_is_told_so_with_exit_2(
    filled_archive: RunningEmulator, tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.setenv(TOKEN_ENV, "demo-outsider-token")
    args = ["export", "--archive", ARCHIVE, "--out", str(tmp_path / "out")]
    args += ["--base-url", filled_archive.base_url, "--ca-file", str(filled_archive.ca_file)]

    assert main(args) == 2

    err = capsys.readouterr().err
    assert f"archive '{ARCHIVE}' was not found at {filled_archive.base_url}" in err
    assert "member of the archive (editor, uploader or user)" in err
    assert not (tmp_path / "out").exists()


def test_an_archive_user_exports_what_it_may_view(filled_archive: RunningEmulator, tmp_path: Path):
    """Members who only view (``reader1``) see every item's images (docs/gc-api.md §12)."""
    summary = _archive(filled_archive, "reader1").export(tmp_path / "out")

    assert summary.failures == [] and len(summary.items) == 3


def test_reader_study_flags_with_archive_exit_2(tmp_path: Path, capsys):
    assert main(["export", "--archive", ARCHIVE, "--mine", "--out", str(tmp_path / "out")]) == 2

    assert "--mine is for a reader study's export" in capsys.readouterr().err


def test_an_export_killed_with_sigkill_resumes_without_downloading_finished_files_again(
    filled_archive: RunningEmulator, tmp_path: Path
):
    emulator = filled_archive
    big = _noise_mha(tmp_path / "big.mha", (32, 256, 256))  # 4 MiB: the object store sends it in 1 MiB blocks
    with gcapi_client(emulator, "editor") as editor:
        editor.add_case_to_archive(
            archive_slug=ARCHIVE, title="big", values=[gcapi.SocketValueSpec(socket_slug="ct-image", file=big)]
        )
    eventually(lambda: True if any(i.title == "big" and i.values for i in _items(emulator)) else None, "big's import")
    big_pk = next(i for i in _items(emulator) if i.title == "big").values["ct-image"].image_pk
    assert big_pk is not None
    # Downloads trickle at 1 MiB/s: the small files finish at once, the big one is still on its way a second later.
    emulator.context.faults.replace([FaultRule(match="GET s3", bandwidth_bytes_per_second=1024**2)])
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCBULK_")}
    env[TOKEN_ENV] = emulator.tokens["editor"]
    command = [sys.executable, "-m", "gcbulk", "export", "--archive", ARCHIVE, "--out", str(out)]
    command += ["--base-url", emulator.base_url, "--ca-file", str(emulator.ca_file)]
    partial = out / ".gcbulk" / "partial"
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (
            any(size >= 1024**2 for size in _part_sizes(partial)) and len(list((out / "cases").rglob("*.mha"))) == 4
        ):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the export never got half-way through the big image"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    emulator.context.faults.replace([])
    gets = emulator.context.counters.requests[S3_GET]

    summary = _archive(emulator).export(out)

    assert summary.failures == []
    # Only the cut image is fetched again, from where it stopped; the six finished files stay as they were.
    assert summary.files.downloaded == 1 and summary.files.resumed == 1 and summary.files.skipped == 6
    assert emulator.context.counters.requests[S3_GET] == gets + 1
    assert (out / "cases" / "big" / "ct-image.mha").read_bytes() == _object_bytes(emulator, big_pk)
    assert not list(partial.glob("*.part"))


async def test_a_notebook_exports_an_archive_and_plans_it_back_inside_its_running_loop(
    filled_archive: RunningEmulator, tmp_path: Path
):
    """The Python API as a Jupyter cell calls it: synchronous, inside a running event loop, never nesting it."""
    emulator = filled_archive
    with anyio.fail_after(120):
        exported = _archive(emulator).export(tmp_path / "out")
        job = gcbulk.Job(
            exported.job_file, token=emulator.tokens["editor"], environ={"GCBULK_READER_STUDY": "example-study"}
        )
        report = job.plan(dry_run=True)

    assert exported.failures == [] and len(exported.items) == 3
    assert report.diff.cases == 3 and not report.blocking and report.findings == []


def test_a_folder_holding_a_study_export_is_refused_for_an_archive_naming_both(tmp_path: Path):
    url = "https://127.0.0.1:1/api/v1/"
    with ResultsLedger.open_export(tmp_path, reader_study="example-study", base_url=url):
        pass

    with pytest.raises(ExportFolderTaken) as refused:
        ResultsLedger.open_archive_export(tmp_path, archive=ARCHIVE, base_url=url)

    assert "already holds an export of reader study 'example-study'" in str(refused.value)
    assert f"export archive '{ARCHIVE}' from" in str(refused.value)


async def test_a_long_export_says_what_it_is_doing(filled_archive: RunningEmulator, tmp_path: Path):
    emulator = filled_archive
    # Every download waits 0.3 s before its first byte: the export is busy downloading for many progress periods.
    emulator.context.faults.replace([FaultRule(match="GET s3", latency_seconds=0.3)])
    said: list[str] = []
    client = GrandChallengeClient(base_url=emulator.base_url, token=emulator.tokens["editor"], ca_file=emulator.ca_file)
    async with client:
        with anyio.fail_after(60):
            await export_archive(
                client,
                ArchiveExportOptions(archive=ARCHIVE, out_dir=tmp_path / "out"),
                on_progress=lambda summary: said.append(summary.progress_line()),
                progress_seconds=0.05,
            )

    downloading = [line for line in said if line.startswith("downloading")]
    assert downloading, said
    assert downloading[0].startswith("downloading the images and files of 6 values (3 items): ")
    assert downloading[-1].endswith("MiB so far") and " failed, " in downloading[-1]


def test_a_reader_study_is_built_from_an_archive_in_three_commands(
    filled_archive: RunningEmulator, tmp_path: Path, monkeypatch, capsys
):
    """The README's three lines: export the archive, plan the tree into a study, run it."""
    emulator = filled_archive
    monkeypatch.setenv(TOKEN_ENV, emulator.tokens["editor"])
    monkeypatch.setenv("GCBULK_READER_STUDY", "example-study")
    monkeypatch.setenv("GCBULK_METRICS_ADDRESS", "off")
    out = tmp_path / "archive-out"
    connection = ["--base-url", emulator.base_url, "--ca-file", str(emulator.ca_file)]

    assert main(["export", "--archive", ARCHIVE, "--out", str(out), *connection]) == 0
    printed = capsys.readouterr()
    written = [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()]
    assert not any(emulator.tokens["editor"] in text for text in [printed.out, printed.err, *written])
    assert main(["plan", str(out / "job.toml")]) == 0
    assert main(["run", str(out / "job.toml"), "--progress-interval", "60"]) == 0, capsys.readouterr()

    store = emulator.context.store
    study = store.reader_study_by_slug("example-study")
    built = {d.title: d for d in store.display_sets.values() if d.reader_study_pk == study.pk}
    for item in _items(emulator):
        display_set = built[item.title or f"item-{item.pk}"]
        assert set(display_set.values) == set(item.values)
        for socket, value in item.values.items():
            copy = display_set.values[socket]
            if value.image_pk:  # the same voxels, imported again from the exported file
                assert _object_bytes(emulator, copy.image_pk) == _object_bytes(emulator, value.image_pk)
            elif value.file_key:
                assert _file_value_bytes(emulator, display_set, socket) == _file_value_bytes(emulator, item, socket)
            else:
                assert copy.value == value.value


def test_a_renamed_item_gets_a_new_folder_and_the_old_one_is_named_not_deleted(
    filled_archive: RunningEmulator, tmp_path: Path, monkeypatch, capsys
):
    emulator = filled_archive
    out = tmp_path / "out"
    _archive(emulator).export(out)
    case1 = next(item for item in _items(emulator) if item.title == "case 1")
    with gcapi_client(emulator, "editor") as editor:
        editor.update_archive_item(archive_item_pk=case1.pk, values=[], title="case 1 (reviewed)")

    again = _archive(emulator).export(out)

    assert again.stale_folders == ["case 1"] and (out / "cases" / "case 1" / "ct-image.mha").is_file()
    assert (out / "cases" / "case 1 (reviewed)" / "ct-image.mha").is_file()
    assert again.files.downloaded == 4  # the renamed item's four files, at their new place
    assert any("left in place: 1 case folder(s)" in line and "'case 1'" in line for line in again.lines())
    monkeypatch.setenv(TOKEN_ENV, emulator.tokens["editor"])
    monkeypatch.setenv("GCBULK_READER_STUDY", "example-study")
    assert main(["plan", str(out / "job.toml"), "--dry-run"]) == 1  # the stale folder is blocked, not planned twice


def test_a_file_that_cannot_be_downloaded_exits_1_naming_it_and_a_rerun_finishes(
    filled_archive: RunningEmulator, tmp_path: Path, monkeypatch, capsys
):
    emulator = filled_archive
    monkeypatch.setenv(TOKEN_ENV, emulator.tokens["editor"])
    args = ["export", "--archive", ARCHIVE, "--out", str(tmp_path / "out")]
    args += ["--base-url", emulator.base_url, "--ca-file", str(emulator.ca_file)]
    case1 = next(item for item in _items(emulator) if item.title == "case 1")
    stored = emulator.context.objects.object_path(IMAGES_BUCKET, case1.values["report-pdf"].file_key)
    content = stored.read_bytes()
    stored.unlink()

    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "images and files: 5 downloaded (0 resumed), 0 already present, 1 failed" in printed
    assert "failed: cases/case 1/report-pdf.pdf: " in printed

    stored.write_bytes(content)
    assert main(args) == 0
    assert "images and files: 1 downloaded (0 resumed), 5 already present, 0 failed" in capsys.readouterr().out


def test_a_file_no_value_holds_any_more_is_named_not_deleted(filled_archive: RunningEmulator, tmp_path: Path):
    emulator = filled_archive
    out = tmp_path / "out"
    _archive(emulator).export(out)
    (out / "cases" / "case 1" / "notes.txt").write_text("the user's own\n")

    again = _archive(emulator).export(out)

    assert again.stale_files == ["cases/case 1/notes.txt"]
    assert any("left in place: 1 file(s)" in line and "'cases/case 1/notes.txt'" in line for line in again.lines())
    assert (out / "cases" / "case 1" / "notes.txt").read_text() == "the user's own\n"

"""The tutorial's flow with a DICOM tree: series found by content, de-identified locally, sent as DICOM Image Sets
(``user_uploads`` + ``image_name``) beside the ordinary image-socket path, checked on the emulator's stored bytes.
Synthetic data only."""

from __future__ import annotations

from pathlib import Path

import anyio
import pydicom
import pytest
from pydicom.uid import generate_uid

from gcbulk.emulator.objects import IMAGES_BUCKET
from gcbulk.emulator.server import RunningEmulator
from gcbulk.engine.gc.client import GrandChallengeClient
from gcbulk.engine.jobfile import load_job
from gcbulk.state import dicom_staging
from gcbulk.state.ledger import Ledger, default_ledger_path
from tests.dicom.synthetic import PATIENT_ID, PATIENT_NAME, identified_series, structured_report
from tests.engine.conftest import FAST_ENGINE, run_job, study_display_sets, values_by_socket, write_job

RULES = """
[[rules]]
dicom = { Modality = "CT" }
socket = "dicom-image-set"
image_name = "{title} {Modality}"

[[rules]]
dicom = { Modality = "MR" }
socket = "generic-medical-image"
"""
# The emulator keeps what it received: the bytes checked are the ones gcbulk uploaded.
AS_RECEIVED = {"dicom_server_deidentify": False}


def dicom_tree(root: Path) -> dict[str, list[Path]]:
    """patient1: a CT and an MR series in one folder and a stray report; patient2: a CT series in a subfolder."""
    study = generate_uid()
    one = root / "patient1"
    one.mkdir(parents=True)
    ct1 = identified_series(one, 3, number=1, description="chest", seed=1, study_uid=study, prefix="ct")
    identified_series(one, 2, modality="MR", number=2, seed=2, study_uid=study, prefix="mr")
    structured_report(one / "report.dcm", study_uid=study)
    (root / "patient2" / "scan").mkdir(parents=True)
    ct2 = identified_series(root / "patient2" / "scan", 4, number=3, seed=3)
    return {"patient1": ct1, "patient2": ct2}


def _stored_instances(emulator: RunningEmulator, image_pk: str) -> list[bytes]:
    image = emulator.context.store.images[image_pk]
    return [emulator.context.objects.object_path(IMAGES_BUCKET, key).read_bytes() for _, key in image.dicom_instances]


@pytest.mark.parametrize("emulator_config", [AS_RECEIVED], indirect=True)
async def test_the_tutorial_flow_with_a_dicom_tree_sends_de_identified_image_sets(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    sources = dicom_tree(tmp_path / "cases")
    job_file = write_job(tmp_path, emulator, rules=RULES)
    job = load_job(job_file)

    outcome = await run_job(job_file, emulator, FAST_ENGINE.replace(dicom=job.dicom))

    assert outcome.failed == [] and not outcome.interrupted
    display_sets = await study_display_sets(client)
    assert set(display_sets) == {"patient1", "patient2"}
    for title, paths in sources.items():
        values = values_by_socket(display_sets[title])
        image = await client.request("GET", values["dicom-image-set"]["image"])
        assert image["dicom_image_set"] is not None
        instances = await client.request("GET", f"cases/images/{image['pk']}/dicom/instances/")
        assert len(instances["instances"]) == len(paths)
        stored = _stored_instances(emulator, image["pk"])
        for raw in stored:  # the identifying tags of every source file are gone from every uploaded file
            assert PATIENT_NAME.encode() not in raw and PATIENT_ID.encode() not in raw
        datasets = [pydicom.dcmread(__import__("io").BytesIO(raw)) for raw in stored]
        assert len({d.SeriesInstanceUID for d in datasets}) == 1
        assert {d.SeriesInstanceUID for d in datasets} != {pydicom.dcmread(paths[0]).SeriesInstanceUID}
    p1 = values_by_socket(display_sets["patient1"])
    named = await client.request("GET", p1["dicom-image-set"]["image"])
    assert named["name"] == "patient1 CT"
    assert "generic-medical-image" in p1  # the MR series, through the ordinary image-socket path
    assert "generic-medical-image" not in values_by_socket(display_sets["patient2"])
    with Ledger.open(default_ledger_path(job_file), job.binding) as ledger:
        assert dicom_staging.staging_events(ledger) == 2  # one de-identification per image set
        assert ledger.rows("SELECT * FROM dicom_staging") == []  # released once Grand Challenge held them
    assert not any(job.dicom.staging.iterdir())


async def test_files_sent_as_they_are_are_de_identified_by_the_server(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    dicom_tree(tmp_path / "cases")
    job_file = write_job(tmp_path, emulator, rules=RULES)
    job_file.write_text(job_file.read_text() + "\n[dicom]\ndeidentify = false\n")
    job = load_job(job_file)

    outcome = await run_job(job_file, emulator, FAST_ENGINE.replace(dicom=job.dicom))

    assert outcome.failed == []
    with Ledger.open(default_ledger_path(job_file), job.binding) as ledger:
        assert dicom_staging.staging_events(ledger) == 0  # nothing staged: the files went as they are
    value = values_by_socket((await study_display_sets(client))["patient2"])["dicom-image-set"]
    image = await client.request("GET", value["image"])
    assert all(PATIENT_NAME.encode() not in raw for raw in _stored_instances(emulator, image["pk"]))


def _refused_set(tmp_path: Path) -> None:
    """One series by its UIDs, but slices of two sizes: no local check sees it, the server's import refuses it."""
    from tests.dicom.synthetic import edit

    folder = tmp_path / "cases" / "patient1"
    folder.mkdir(parents=True)
    big = identified_series(folder, 2, rows=8, columns=8, seed=1, prefix="a")
    small = identified_series(folder, 2, rows=4, columns=4, seed=2, prefix="b")
    first = pydicom.dcmread(big[0])
    edit(
        small,
        SeriesInstanceUID=first.SeriesInstanceUID,
        StudyInstanceUID=first.StudyInstanceUID,
        FrameOfReferenceUID=first.FrameOfReferenceUID,
    )


async def test_an_image_set_the_server_refused_fails_as_soon_as_its_import_has_ended_not_at_its_deadline(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    _refused_set(tmp_path)
    job_file = write_job(tmp_path, emulator, rules=RULES)
    job = load_job(job_file)

    # An hour's deadline: the case must fail long before it, once the server has deleted the uploads (its import
    # ended) and the value still has not appeared.
    with anyio.fail_after(90):
        outcome = await run_job(job_file, emulator, FAST_ENGINE.replace(dicom=job.dicom, import_timeout=3600.0))

    ((title, reason),) = outcome.failed
    assert title == "patient1"
    assert reason.startswith("dicom-image-set: Grand Challenge refused the DICOM Image Set: its import ended")
    assert "one series of one study of one patient" in reason and "de-identified locally" in reason
    assert values_by_socket((await study_display_sets(client))["patient1"]) == {}


async def test_an_image_set_the_server_refuses_silently_fails_with_what_was_checked(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    folder = tmp_path / "cases" / "patient1"
    folder.mkdir(parents=True)
    big = identified_series(folder, 2, rows=8, columns=8, seed=1, prefix="a")
    small = identified_series(folder, 2, rows=4, columns=4, seed=2, prefix="b")
    first = pydicom.dcmread(big[0])
    # One series by its UIDs, but slices of two sizes: no local check sees it, the server's import refuses it.
    edit_uids = {
        "SeriesInstanceUID": first.SeriesInstanceUID,
        "StudyInstanceUID": first.StudyInstanceUID,
        "FrameOfReferenceUID": first.FrameOfReferenceUID,
    }
    from tests.dicom.synthetic import edit

    edit(small, **edit_uids)
    job_file = write_job(tmp_path, emulator, rules=RULES)
    job = load_job(job_file)

    outcome = await run_job(job_file, emulator, FAST_ENGINE.replace(dicom=job.dicom, import_timeout=1.0))

    ((title, reason),) = outcome.failed
    assert title == "patient1"
    assert "did not appear in the display set within 1 s" in reason
    assert "one series of one study of one patient" in reason and "de-identified locally" in reason
    assert values_by_socket((await study_display_sets(client))["patient1"]) == {}


async def test_de_identification_past_its_deadline_fails_the_case_and_sends_nothing(
    tmp_path: Path, emulator: RunningEmulator
) -> None:
    identified_series(tmp_path / "cases" / "patient1", 40, seed=5)
    job_file = write_job(tmp_path, emulator, rules=RULES)
    job = load_job(job_file)
    # A deadline no process pool can meet (starting one alone takes longer): the wait gives up and says why.
    config = FAST_ENGINE.replace(dicom=job.dicom, limit_wait_timeout_seconds=0.001)

    outcome = await run_job(job_file, emulator, config)

    ((title, reason),) = outcome.failed
    assert title == "patient1" and "de-identifying its 40 files took more than 0 s" in reason
    assert emulator.context.store.uploads == {}  # nothing was sent


PHI = {
    "PatientName": "SMITH^JOHNATHAN",
    "PatientID": "MRN-778899",
    "PatientBirthDate": "19700101",
    "AccessionNumber": "ACC-5512",
    "InstitutionName": "St Elsewhere Hospital",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "SeriesDescription": "chest SMITH^JOHNATHAN axial",
}
PHI_TEXTS = ("SMITH", "JOHNATHAN", "MRN-778899", "19700101", "ACC-5512", "Elsewhere", "GREGORY")


class _Recorded(dict):
    """The emulator's uploads table, remembering every upload made (the server deletes them once consumed)."""

    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.seen = seen

    def __setitem__(self, key: str, upload: object) -> None:
        self.seen.append(repr(upload))
        super().__setitem__(key, upload)


@pytest.mark.parametrize("emulator_config", [AS_RECEIVED], indirect=True)
async def test_a_dicom_series_with_phi_in_many_places_sends_none_of_it(
    tmp_path: Path, emulator: RunningEmulator, client: GrandChallengeClient
) -> None:
    """PHI in the headers, the series description, the folder and file names; a second case whose folder is named
    after the PatientID. Nothing identifying reaches the emulator through any field: upload names, titles, image
    names, the stored bytes."""
    from tests.dicom.synthetic import edit

    inner = tmp_path / "cases" / "patient1" / "SMITH JOHNATHAN 2024"
    inner.mkdir(parents=True)
    paths = identified_series(inner, 3, seed=11, prefix="SMITH_JOHNATHAN_")
    edit(paths, **PHI)
    other = identified_series(tmp_path / "cases" / "MRN-778899_ct", 2, seed=12)
    edit(other, **PHI)
    rules = '[[rules]]\ndicom = { Modality = "CT" }\nsocket = "dicom-image-set"\nimage_name = "{title} {Modality}"\n'
    job_file = write_job(tmp_path, emulator, rules=rules)
    job = load_job(job_file)
    seen: list[str] = []
    emulator.context.store.uploads = _Recorded(seen)

    outcome = await run_job(job_file, emulator, FAST_ENGINE.replace(dicom=job.dicom))

    assert outcome.failed == [] and outcome.done == 1  # the case named after the PatientID is blocked at plan
    display_sets = await study_display_sets(client)
    assert set(display_sets) == {"patient1"}
    image = await client.request("GET", values_by_socket(display_sets["patient1"])["dicom-image-set"]["image"])
    assert image["name"] == "patient1 CT"
    assert len(seen) == 3
    store = emulator.context.store
    visible = "\n".join([*seen, repr(store.display_sets), repr(store.images), repr(store.uploads)])
    stored = _stored_instances(emulator, image["pk"])
    assert len(stored) == 3
    for text in PHI_TEXTS:
        assert text not in visible, text
        assert all(text.encode() not in raw for raw in stored), text

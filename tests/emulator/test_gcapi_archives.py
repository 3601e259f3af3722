"""gcapi 0.16.1's own archive helpers, unmodified, against the emulator over TLS (docs/gc-api.md §12).

The steps of gcapi's documented archive flow: look the archive up by slug, add a case with an image and a JSON value,
list the archive's items, update an item, and build a reader-study case from the archive's image without uploading it
again (an ``existing_image_api_url`` spec).
"""

from __future__ import annotations

import gcapi
import numpy as np
import SimpleITK as sitk

from tests.emulator.test_gcapi_end_to_end import eventually
from tests.imaging import make_mha

ARCHIVE = "example-archive"


def test_gcapi_adds_lists_and_updates_archive_items_and_reuses_their_image(
    threaded_emulator, open_gcapi_client, tmp_path
):
    emulator = threaded_emulator
    editor = open_gcapi_client("editor")
    viewer = open_gcapi_client("reader1")
    ct = make_mha(tmp_path / "ct.mha", (4, 8, 8))

    archive = editor.archives.detail(slug=ARCHIVE)
    assert isinstance(archive, gcapi.models.Archive) and archive.title == "Example CT archive"

    created = editor.add_case_to_archive(
        archive_slug=ARCHIVE,
        values=[
            gcapi.SocketValueSpec(socket_slug="ct-image", file=ct),
            gcapi.SocketValueSpec(socket_slug="patient-age", value=61),
        ],
        title="case 1",
    )
    assert isinstance(created, gcapi.models.ArchiveItemPost) and created.archive == archive.api_url

    def imported() -> gcapi.models.ArchiveItem | None:
        found = editor.archive_items.detail(pk=created.pk)
        return found if {v.interface.slug for v in found.values} == {"ct-image", "patient-age"} else None

    item = eventually(imported, "the archive item's CT image to be imported")
    listed = list(viewer.archive_items.iterate_all(params={"archive": archive.pk}))
    assert [(i.pk, i.title) for i in listed] == [(created.pk, "case 1")]

    updated = editor.update_archive_item(
        archive_item_pk=created.pk,
        values=[gcapi.SocketValueSpec(socket_slug="patient-age", value=62)],
        title="case 1 (age fixed)",
    )
    assert updated.title == "case 1 (age fixed)"
    assert {v.interface: v.value for v in updated.values}["patient-age"] == 62

    # A reader study built from the archive, as the README shows it: each value names the archive's image (gcapi checks
    # that it may view it first); no upload is made, no bytes move.
    ct_value = next(v for v in item.values if v.interface.slug == "ct-image")
    uploads_before = len(emulator.context.store.uploads)
    built = [
        editor.add_case_to_reader_study(
            reader_study_slug="example-study",
            title=archive_item.title,
            values=[
                gcapi.SocketValueSpec(socket_slug=v.interface.slug, existing_image_api_url=v.image)
                for v in archive_item.values
                if v.image
            ],
        )
        for archive_item in editor.archive_items.iterate_all(params={"archive": archive.pk})
    ]
    assert len(emulator.context.store.uploads) == uploads_before
    shown = editor.reader_studies.display_sets.detail(pk=built[0].pk)
    assert [(v.interface.slug, v.image) for v in shown.values] == [("ct-image", ct_value.image)]

    downloaded = viewer.images.download(output_directory=tmp_path / "out", url=ct_value.image, filename="ct")
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(downloaded[0]))), sitk.GetArrayFromImage(sitk.ReadImage(str(ct)))
    )

"""MetaImage, NIfTI and NRRD files are imported by panimg, the server's own importer (emulator/panimg_import.py): its
formats, its ``segments`` and its error texts; TIFF and DICOM stay with SimpleITK (they would need system libraries)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from gcbulk.emulator.image_builder import InputFile, build_images
from tests.imaging import make_mask, make_mha, make_unimportable_mha


def _write(path, pixels: np.ndarray):
    sitk.WriteImage(sitk.GetImageFromArray(pixels), str(path))
    return path


def test_nifti_and_nrrd_images_import_with_the_servers_shape(tmp_path):
    nifti = make_mha(tmp_path / "src.mha", (3, 5, 7))
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(tmp_path / "ct.nrrd"))

    result = build_images(
        [InputFile("ct.nii.gz", tmp_path / "ct.nii.gz"), InputFile("ct.nrrd", tmp_path / "ct.nrrd")], tmp_path / "work"
    )

    assert result.file_errors == {}
    assert sorted((image.name, image.shape, image.element_type) for image in result.images) == [
        ("ct.nii.gz", [3, 5, 7], "16-bit signed integer"),
        ("ct.nrrd", [3, 5, 7], "16-bit signed integer"),
    ]
    for image in result.images:  # re-written as MetaImage, as the server stores them
        assert sitk.ReadImage(str(image.mha_path)).GetSize() == (7, 5, 3)


def test_segments_are_the_servers_panimgs_distinct_values_of_8_bit_images_only(tmp_path):
    """The server runs panimg 0.15.2: past 64 distinct values an 8-bit image has no segments, in every format (the
    emulator's panimg 0.18.2 would keep 256; emulator/panimg_import.py models the server's limit)."""
    many = np.arange(65, dtype=np.uint8).reshape(5, 13)
    inputs = [
        InputFile("mask.mha", make_mask(tmp_path / "mask.mha", values=(0, 1, 3))),
        InputFile("ct.mha", make_mha(tmp_path / "ct.mha", dtype="int16")),
        InputFile("sixty-four.mha", _write(tmp_path / "sixty-four.mha", many[:, :-1].copy())),
        InputFile("many.mha", _write(tmp_path / "many.mha", many)),
        # the same values streamed slab by slab (too large to read whole) give the same segments
        InputFile("big.mha", _write(tmp_path / "big.mha", np.stack([many] * 8))),
    ]

    # mask.mha, sixty-four.mha and many.mha go through panimg; big.mha (520 bytes of pixels) and ct.mha (512) are
    # streamed
    result = build_images(inputs, tmp_path / "work", in_memory_limit_bytes=300)

    assert {image.name: image.segments for image in result.images} == {
        "mask.mha": [0, 1, 3],
        "ct.mha": None,
        "sixty-four.mha": sorted({int(v) for v in many[:, :-1].ravel()}),
        "many.mha": None,
        "big.mha": None,
    }


def test_the_planner_and_the_emulator_agree_on_the_64_value_limit_of_a_segmentation(tmp_path):
    from gcbulk.emulator.socket_kinds import SEGMENTS_UNDETERMINED, voxel_value_error
    from gcbulk.emulator.store import Socket
    from gcbulk.engine.plan.cases import PlannedFile, PlannedItem
    from gcbulk.engine.plan.content import ContentChecker

    overlay = [{"name": f"s{v}", "voxel_value": v, "visible": True} for v in range(1, 100)]
    socket = {"slug": "seg", "kind": "Segmentation", "super_kind": "Image", "overlay_segments": overlay}
    emulated = Socket(
        pk=1,
        slug="seg",
        title="Seg",
        kind="Segmentation",
        super_kind="Image",
        relative_path="",
        overlay_segments=overlay,
    )
    for count, accepted in ((64, True), (65, False)):
        path = _write(tmp_path / f"m{count}.mha", np.arange(count, dtype=np.uint8).reshape(1, count))
        (image,) = build_images([InputFile(path.name, path)], tmp_path / f"work{count}").images
        refusal = voxel_value_error(emulated, image.segments)
        item = PlannedItem("seg", files=(PlannedFile(path.name, path.name, path.stat().st_size, 0),))
        found = ContentChecker({"seg": socket}).check(item, str(tmp_path), str(tmp_path), "case")
        if accepted:
            assert refusal is None and found == []
        else:
            assert refusal == SEGMENTS_UNDETERMINED
            assert [f.code for f in found] == ["bad-segmentation"]
            assert "it has 65 distinct voxel values; at most 64 are allowed" in found[0].message


def test_an_unreadable_metaimage_carries_every_panimg_builders_reason(tmp_path):
    garbage = tmp_path / "scan.mha"
    garbage.write_bytes(b"\x00\x01 this is not a MetaImage\n" * 10)
    five_channels = make_unimportable_mha(tmp_path / "short.mha")

    result = build_images([InputFile("scan.mha", garbage), InputFile("short.mha", five_channels)], tmp_path / "work")

    assert result.images == [] and set(result.file_errors) == {"scan.mha", "short.mha"}
    for reasons in result.file_errors.values():
        # panimg's own words, one per builder that tried the file
        assert reasons.startswith("Mhd image builder: ")
        assert "NifTI image builder: Not a NifTI image file" in reasons
        assert "NRRD image builder: Not a NRRD image file" in reasons
    assert result.default_error_message == "2 files could not be imported"

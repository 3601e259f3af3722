"""Small, real medical images for tests: every helper writes files SimpleITK and Grand Challenge's importer can read.

Use them wherever a test needs image files on disk (emulator imports, transfer-engine uploads)::

    from tests.imaging import make_mha, make_mhd_zraw, make_tiff, make_dicom_series

    ct = make_mha(tmp_path / "ct.mha", (8, 16, 16))           # 3-D: (depth, height, width), int16
    header, data = make_mhd_zraw(tmp_path / "ct.mhd", (4, 8, 8))  # a header and its compressed data file
    tif = make_tiff(tmp_path / "slide.tif", (32, 48))          # 2-D: (height, width), uint8
    dicom_files = make_dicom_series(tmp_path / "series", 5)     # 5 slices of one series, 16x16 each

Shapes are numpy order (slowest axis first), so ``make_mha(p, (8, 16, 16))`` gives an image whose Grand Challenge
``shape`` is ``[8, 16, 16]`` and ``width`` 16. Pixel values are a deterministic ramp (``seed`` shifts it), so two
calls with the same arguments write the same pixels and different seeds give different content hashes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

DEFAULT_SPACING = (0.5, 0.75, 1.25)  # x, y, z in mm: distinct, so a test can tell the axes apart


def pixel_ramp(shape: tuple[int, ...], dtype: str = "int16", seed: int = 0) -> np.ndarray:
    """Deterministic pixels of ``shape`` (numpy order): a ramp offset by ``seed``, wrapped into the dtype's range."""
    count = int(np.prod(shape))
    values = (np.arange(count, dtype=np.int64) + seed * 7919) % 251
    return values.reshape(shape).astype(dtype)


def make_mask(
    path: Path, shape: tuple[int, ...] = (4, 8, 8), *, seed: int = 0, values: tuple[int, ...] = (0, 1)
) -> Path:
    """A uint8 segmentation whose voxels take only ``values`` (the seed study's airway-segmentation accepts {0, 1})."""
    ramp = pixel_ramp(shape, "int64", seed)
    mask = np.asarray(values, dtype=np.uint8)[ramp % len(values)]
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing(tuple(DEFAULT_SPACING[: len(shape)]))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _image(shape: tuple[int, ...], dtype: str, seed: int, spacing: tuple[float, ...] | None) -> sitk.Image:
    image = sitk.GetImageFromArray(pixel_ramp(shape, dtype, seed))
    image.SetSpacing(tuple(spacing or DEFAULT_SPACING[: len(shape)]))
    return image


def make_mha(
    path: Path,
    shape: tuple[int, ...] = (4, 8, 8),
    *,
    dtype: str = "int16",
    seed: int = 0,
    spacing: tuple[float, ...] | None = None,
    compress: bool = False,
) -> Path:
    """Writes a MetaImage ``.mha`` (header and pixels in one file) and returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_image(shape, dtype, seed, spacing), str(path), useCompression=compress)
    return path


def make_mhd_zraw(
    path: Path,
    shape: tuple[int, ...] = (4, 8, 8),
    *,
    dtype: str = "int16",
    seed: int = 0,
    compress: bool = True,
) -> tuple[Path, Path]:
    """Writes ``name.mhd`` with its data file (``.zraw`` when compressed, else ``.raw``); returns (header, data)."""
    if path.suffix != ".mhd":
        raise ValueError(f"{path} must end in .mhd")
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_image(shape, dtype, seed, None), str(path), useCompression=compress)
    data = path.with_suffix(".zraw" if compress else ".raw")
    if not data.exists():
        raise RuntimeError(f"SimpleITK did not write the expected data file {data}")
    return path, data


def make_tiff(path: Path, shape: tuple[int, ...] = (32, 48), *, seed: int = 0, rgb: bool = False) -> Path:
    """Writes an 8-bit TIFF, grey (``shape`` = height, width) or RGB (three channels per pixel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = pixel_ramp(shape + ((3,) if rgb else ()), "uint8", seed)
    image = sitk.GetImageFromArray(pixels, isVector=rgb)
    sitk.WriteImage(image, str(path))
    return path


def make_dicom_series(
    directory: Path,
    count: int,
    *,
    rows: int = 16,
    columns: int = 16,
    seed: int = 0,
    modality: str = "CT",
) -> list[Path]:
    """Writes ``count`` CT slices of one series as ``slice_000.dcm``…; returns their paths in slice order.

    Built with pydicom so the files carry the tags a series reader needs (series UID, positions, orientation).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    volume = pixel_ramp((count, rows, columns), "int16", seed)
    paths = []
    for index in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = directory / f"slice_{index:03d}.dcm"
        dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        dataset.SOPClassUID = CTImageStorage
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = frame_uid
        dataset.Modality = modality
        dataset.PatientID = "EMULATOR-TEST"
        dataset.SeriesNumber = 1
        dataset.InstanceNumber = index + 1
        dataset.ImagePositionPatient = [0.0, 0.0, float(index) * 2.0]
        dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        dataset.PixelSpacing = [0.5, 0.5]
        dataset.SliceThickness = 2.0
        dataset.Rows, dataset.Columns = rows, columns
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated = 16
        dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 1
        dataset.RescaleIntercept = 0
        dataset.RescaleSlope = 1
        dataset.PixelData = volume[index].tobytes()
        dataset.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def read_image(path: Path) -> sitk.Image:
    """Reads any image file SimpleITK understands (for asserting on what was imported or downloaded)."""
    return sitk.ReadImage(str(path))


def make_unimportable_mha(path: Path, shape: tuple[int, ...] = (4, 8, 8)) -> Path:
    """An .mha whose header and data agree (it passes the plan's header checks) but that the server's importer
    refuses: five channels per voxel, where panimg takes at most four ("Images with more than 4 channels not
    supported"). A file cut short no longer serves: the plan refuses it itself (its header claims more voxels than it
    holds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = pixel_ramp((*shape, 5), "uint8")
    sitk.WriteImage(sitk.GetImageFromArray(pixels, isVector=True), str(path))
    return path

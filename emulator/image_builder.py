"""Turns the files of an upload session into images, as Grand Challenge's importer (panimg) does: blocking, pure.

The import worker runs ``build_images`` in a thread. MetaImage (``.mha``, ``.mhd`` with its ``.zraw``/``.raw``),
NIfTI and NRRD files go through panimg itself, the server's importer (``panimg_import.py``), so accepted files,
``segments`` and error texts are the server's. TIFF, PNG/JPEG and DICOM series (grouped by series instance UID) are
parsed with SimpleITK: panimg's TIFF builder needs the system libraries libopenslide and libvips, which pip cannot
install, and DICOM Image Sets (``dicom_sets.py``) build through the DICOM path. Every image is re-written as a
MetaImage ``.mha`` like the real importer does (docs/gc-api.md §9: the stored bytes differ from the uploaded ones), so a
client must check an import by its properties.

Images too large to read whole (``in_memory_limit_bytes``) are copied slab by slab (ITK's MetaImage reader streams a
region at a time), so the importer never holds more than ``slab_bytes`` of pixels for them: panimg reads images whole,
which the server has the memory for and a test machine may not."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gcbulk.emulator.panimg_import import PANIMG_SUFFIXES, build_with_panimg, mhd_data_file

if TYPE_CHECKING:
    import SimpleITK as sitk

# Images whose pixel data is at most this size are read whole and written compressed; larger ones are streamed.
IN_MEMORY_LIMIT_BYTES = 256 * 1024**2
SLAB_BYTES = 32 * 1024**2

SINGLE_FILE_SUFFIXES = (".mha", ".mhd", ".tif", ".tiff", ".nii", ".nii.gz", ".nrrd", ".png", ".jpg", ".jpeg")
DATA_FILE_SUFFIXES = (".raw", ".zraw")
DICOM_PREAMBLE = 128

_COLOR_SPACES = {1: "GRAY", 3: "RGB", 4: "RGBA"}
_MET_TYPES = {
    "int8": "MET_CHAR",
    "uint8": "MET_UCHAR",
    "int16": "MET_SHORT",
    "uint16": "MET_USHORT",
    "int32": "MET_INT",
    "uint32": "MET_UINT",
    "int64": "MET_LONG_LONG",
    "uint64": "MET_ULONG_LONG",
    "float32": "MET_FLOAT",
    "float64": "MET_DOUBLE",
}


class DuplicateFilesError(ValueError):
    """Two files of one session have the same name; the real importer refuses the whole session."""


@dataclass(frozen=True)
class InputFile:
    name: str  # the upload's filename, which decides the format
    path: Path  # where its bytes are


@dataclass
class BuiltImage:
    name: str
    mha_path: Path
    width: int
    height: int
    depth: int | None
    color_space: str
    voxel_width_mm: float
    voxel_height_mm: float
    voxel_depth_mm: float | None
    shape_without_color: list[int]
    shape: list[int]
    element_type: str
    window_center: float | None = None
    window_width: float | None = None
    modality: str | None = None
    # The distinct voxel values of a single-channel 8-bit integer image, else None: panimg's ``segments``, which the
    # server checks against a segmentation socket's overlay values (docs/gc-api.md §10). None past MAX_SEGMENTS, as the
    # server's panimg 0.15.2 gives them (panimg_import.server_segments models it for MetaImage, NIfTI and NRRD).
    segments: list[int] | None = None


# The server's panimg 0.15.2: an 8-bit image with more distinct values than this has no segments, whatever its format
# (panimg_import.SERVER_PANIMG_MAX_SEGMENTS says why the emulator models it rather than runs it).
MAX_SEGMENTS = 64
_SEGMENT_DTYPES = ("int8", "uint8")


class _SegmentCollector:
    """Gathers the distinct voxel values slab by slab; gives up (None) past ``limit`` if one is given."""

    def __init__(self, dtype: np.dtype, components: int, limit: int | None) -> None:
        self.values: set[int] | None = set() if dtype.name in _SEGMENT_DTYPES and components == 1 else None
        self._limit = limit

    def add(self, array: np.ndarray) -> None:
        if self.values is None:
            return
        self.values.update(int(v) for v in np.unique(array))
        if self._limit is not None and len(self.values) > self._limit:
            self.values = None

    def result(self) -> list[int] | None:
        return sorted(self.values) if self.values is not None else None


@dataclass
class BuildResult:
    images: list[BuiltImage] = field(default_factory=list)
    # filename -> why it could not be imported
    file_errors: dict[str, str] = field(default_factory=dict)

    @property
    def default_error_message(self) -> str:
        """panimg's summary, e.g. "1 file could not be imported" (docs/gc-api.md §2)."""
        count = len(self.file_errors)
        return f"{count} file{'s' if count != 1 else ''} could not be imported"


def build_images(
    files: list[InputFile],
    work_dir: Path,
    *,
    in_memory_limit_bytes: int = IN_MEMORY_LIMIT_BYTES,
    slab_bytes: int = SLAB_BYTES,
) -> BuildResult:
    """Builds every image the files make up; ``.mha`` outputs are written into ``work_dir / "out"``.

    Raises DuplicateFilesError when two inputs share a name. Files that form no image are listed in ``file_errors``.
    """
    import SimpleITK as sitk  # imported lazily: it costs ~95 MiB of RSS, and only imports need it

    input_dir = work_dir / "in"
    output_dir = work_dir / "out"
    input_dir.mkdir(parents=True, exist_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    for item in files:
        link = input_dir / item.name
        if link.is_symlink() or link.exists():
            raise DuplicateFilesError(item.name)
        # Symlinks give every file its upload's name (formats are told by suffix) without copying bytes.
        os.symlink(item.path.resolve(), link)

    result = BuildResult()
    names = sorted(item.name for item in files)
    consumed: set[str] = set()
    dicom_names = [name for name in names if is_dicom(input_dir / name)]
    for_panimg = [
        name for name in names if name not in dicom_names and _panimg_reads(input_dir / name, in_memory_limit_bytes)
    ]
    consumed.update(_build_with_panimg(input_dir, work_dir, output_dir, for_panimg, result))
    for name in names:
        if name in for_panimg or name in dicom_names or name.lower().endswith(DATA_FILE_SUFFIXES):
            continue
        if not name.lower().endswith(SINGLE_FILE_SUFFIXES):
            result.file_errors[name] = "Not a supported image format"
            continue
        output = output_dir / f"{len(result.images)}.mha"
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(input_dir / name))
            reader.ReadImageInformation()
            image = _convert(reader, name, output, in_memory_limit_bytes, slab_bytes)
        except (RuntimeError, ValueError) as error:
            result.file_errors[name] = _first_line(error)
            output.unlink(missing_ok=True)
            continue
        result.images.append(image)
        consumed.add(name)
        if name.lower().endswith(".mhd"):
            data_file = mhd_data_file(input_dir / name)
            if data_file:
                consumed.add(data_file)

    _build_dicom_series(input_dir, output_dir, dicom_names, result)
    for name in names:
        if name.lower().endswith(DATA_FILE_SUFFIXES) and name not in consumed:
            result.file_errors[name] = "Data file without a MetaImage header"
    return result


def _panimg_reads(path: Path, in_memory_limit_bytes: int) -> bool:
    """Whether panimg imports this file: the formats its ITK builders read, unless the pixels are too large to hold
    (panimg reads an image whole; the server has the memory, the emulator streams such images slab by slab)."""
    import SimpleITK as sitk  # lazily, as in build_images

    if not path.name.lower().endswith(PANIMG_SUFFIXES):
        return False
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        pixel_bytes = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents() * _pixel_dtype(reader).itemsize
    except RuntimeError:
        return True  # unreadable: panimg says why, in the server's words
    return pixel_bytes <= in_memory_limit_bytes


def _build_with_panimg(
    input_dir: Path, work_dir: Path, output_dir: Path, names: list[str], result: BuildResult
) -> set[str]:
    """Imports ``names`` with panimg (``panimg_import.py``); returns the input files its images consumed."""
    import SimpleITK as sitk  # lazily, as in build_images

    if not names:
        return set()
    data_files = {name: mhd_data_file(input_dir / name) for name in names if name.lower().endswith(".mhd")}
    images, errors = build_with_panimg(input_dir, names, work_dir)
    result.file_errors.update(errors)
    consumed: set[str] = set()
    for image in images:
        output = output_dir / f"{len(result.images)}.mha"
        image.mha_path.rename(output)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(output))
        reader.ReadImageInformation()
        built = _describe(
            image.name,
            output,
            reader.GetSize(),
            reader.GetSpacing(),
            reader.GetNumberOfComponents(),
            sitk.GetPixelIDValueAsString(reader.GetPixelID()),
        )
        built.segments, built.window_center, built.window_width = (
            image.segments,
            image.window_center,
            image.window_width,
        )
        result.images.append(built)
        consumed.update(name for name in (image.name, data_files.get(image.name)) if name)
    return consumed


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(DICOM_PREAMBLE)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _build_dicom_series(input_dir: Path, output_dir: Path, dicom_names: list[str], result: BuildResult) -> None:
    import SimpleITK as sitk  # lazily, as in build_images

    if not dicom_names:
        return
    grouped: set[str] = set()
    for series_id in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(input_dir)):
        paths = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(input_dir), series_id)
        names = [Path(p).name for p in paths]
        output = output_dir / f"{len(result.images)}.mha"
        try:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(list(paths))
            reader.MetaDataDictionaryArrayUpdateOn()
            image = reader.Execute()
            modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else None
            sitk.WriteImage(image, str(output), useCompression=True)
        except RuntimeError as error:
            for name in names:
                result.file_errors[name] = _first_line(error)
            continue
        built = _describe(
            sorted(names)[0],
            output,
            image.GetSize(),
            image.GetSpacing(),
            image.GetNumberOfComponentsPerPixel(),
            image.GetPixelIDTypeAsString(),
        )
        built.modality = modality or None
        result.images.append(built)
        grouped.update(names)
    for name in dicom_names:
        if name not in grouped:
            result.file_errors.setdefault(name, "DICOM file is not part of a readable series")


def _convert(
    reader: sitk.ImageFileReader, name: str, output: Path, in_memory_limit_bytes: int, slab_bytes: int
) -> BuiltImage:
    import SimpleITK as sitk  # lazily, as in build_images

    size = list(reader.GetSize())
    if len(size) not in (2, 3):
        raise ValueError(f"Unsupported number of dimensions: {len(size)}")
    components = reader.GetNumberOfComponents()
    if components not in _COLOR_SPACES:
        raise ValueError(f"Unsupported number of components: {components}")
    dtype = _pixel_dtype(reader)
    pixel_bytes = int(np.prod(size)) * components * dtype.itemsize
    segments = _SegmentCollector(dtype, components, MAX_SEGMENTS)
    if pixel_bytes <= in_memory_limit_bytes:
        image = reader.Execute()
        segments.add(sitk.GetArrayViewFromImage(image))
        sitk.WriteImage(image, str(output), useCompression=True)
    else:
        _stream_to_mha(reader, output, dtype, slab_bytes, segments)
    element_type = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    built = _describe(name, output, size, reader.GetSpacing(), components, element_type)
    built.segments = segments.result()
    for key, attribute in (("WindowCenter", "window_center"), ("WindowWidth", "window_width")):
        if reader.HasMetaDataKey(key):
            try:
                setattr(built, attribute, float(reader.GetMetaData(key).split()[0]))
            except (ValueError, IndexError):
                pass
    return built


def _pixel_dtype(reader: sitk.ImageFileReader) -> np.dtype:
    """The element type, learned by reading a single voxel (the header alone gives only SimpleITK's pixel id)."""
    import SimpleITK as sitk  # lazily, as in build_images

    dimension = reader.GetDimension()
    reader.SetExtractIndex([0] * dimension)
    reader.SetExtractSize([1] * dimension)
    try:
        voxel = reader.Execute()
        return sitk.GetArrayViewFromImage(voxel).dtype
    finally:
        reader.SetExtractSize([])
        reader.SetExtractIndex([])


def _stream_to_mha(
    reader: sitk.ImageFileReader, output: Path, dtype: np.dtype, slab_bytes: int, segments: _SegmentCollector
) -> None:
    """Writes an uncompressed ``.mha`` by copying slabs along the last axis.

    Hand-written header because SimpleITK's writer needs the whole image in memory; the keys are MetaIO's.
    """
    import SimpleITK as sitk  # lazily, as in build_images

    size = list(reader.GetSize())
    components = reader.GetNumberOfComponents()
    met_type = _MET_TYPES.get(dtype.name)
    if met_type is None:
        raise ValueError(f"Unsupported element type: {dtype.name}")
    direction = " ".join(_number(v) for v in reader.GetDirection())
    header = [
        "ObjectType = Image",
        f"NDims = {len(size)}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        f"TransformMatrix = {direction}",
        f"Offset = {' '.join(_number(v) for v in reader.GetOrigin())}",
        f"ElementSpacing = {' '.join(_number(v) for v in reader.GetSpacing())}",
        f"DimSize = {' '.join(str(v) for v in size)}",
    ]
    if components > 1:
        header.append(f"ElementNumberOfChannels = {components}")
    header += [f"ElementType = {met_type}", "ElementDataFile = LOCAL"]

    row_bytes = int(np.prod(size[:-1])) * components * dtype.itemsize
    step = max(1, slab_bytes // max(row_bytes, 1))
    little_endian = dtype.newbyteorder("<")
    with output.open("wb") as sink:
        sink.write(("\n".join(header) + "\n").encode("ascii"))
        for start in range(0, size[-1], step):
            count = min(step, size[-1] - start)
            reader.SetExtractIndex([0] * (len(size) - 1) + [start])
            reader.SetExtractSize(size[:-1] + [count])
            slab_image = reader.Execute()  # keep it referenced: the array view borrows its buffer
            slab = sitk.GetArrayViewFromImage(slab_image)
            segments.add(slab)
            sink.write(np.ascontiguousarray(slab, dtype=little_endian).tobytes())
    reader.SetExtractSize([])
    reader.SetExtractIndex([])


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _describe(
    name: str,
    output: Path,
    size: list[int] | tuple[int, ...],
    spacing: tuple[float, ...],
    components: int,
    element_type: str,
) -> BuiltImage:
    """Grand Challenge's image properties: ``shape`` is depth, height, width (then the colour channels)."""
    width, height = int(size[0]), int(size[1])
    depth = int(size[2]) if len(size) > 2 else None
    shape_without_color = ([depth] if depth is not None else []) + [height, width]
    return BuiltImage(
        name=name,
        mha_path=output,
        width=width,
        height=height,
        depth=depth,
        color_space=_COLOR_SPACES[components],
        voxel_width_mm=float(spacing[0]),
        voxel_height_mm=float(spacing[1]),
        voxel_depth_mm=float(spacing[2]) if len(spacing) > 2 else None,
        shape_without_color=shape_without_color,
        shape=shape_without_color + ([components] if components > 1 else []),
        element_type=element_type,
    )

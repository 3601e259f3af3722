"""MetaImage, NIfTI and NRRD files imported by panimg, Grand Challenge's own importer library (the server runs it in
``build_images``), so what it accepts, the ``segments`` of 8-bit images and the per-file error texts are the server's.

Only panimg's ITK builders are used (``image_builder_mhd``, ``image_builder_nifti``, ``image_builder_nrrd``): they
need nothing but PyPI wheels (SimpleITK, numpy). Its TIFF builder is not: it opens slides with OpenSlide and its
post-processor makes DZI tiles with pyvips, and both load system libraries (``libopenslide.so.0``,
``libvips.so.42``) that pip cannot install, so TIFF stays with SimpleITK in ``image_builder.py``; so do DICOM series,
which DICOM Image Set values (``dicom_sets.py``, another owner) build through the same path. panimg is imported
lazily: only an import needs it, and importing it pulls in tifffile, pydicom, wsidicom and imagecodecs.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

# The files panimg's ITK builders read; ``.raw``/``.zraw`` go along with the ``.mhd`` header that names them.
PANIMG_SUFFIXES = (".mha", ".mhd", ".nii", ".nii.gz", ".nrrd")


@dataclass(frozen=True)
class PanimgImage:
    name: str  # the input file the image came from (for ``.mhd``, the header)
    mha_path: Path
    segments: list[int] | None  # the distinct values of a single-channel 8-bit image; None past 64 (server_segments)
    window_center: float | None
    window_width: float | None


def build_with_panimg(input_dir: Path, names: list[str], work_dir: Path) -> tuple[list[PanimgImage], dict[str, str]]:
    """Runs panimg's ITK builders over the files ``names`` of ``input_dir`` (with the data files their ``.mhd``
    headers name); its images are written below ``work_dir``.

    Returns the images and, per file none of the builders could read, every builder's reason joined by ``"; "``.
    """
    from panimg import convert
    from panimg.image_builders import image_builder_mhd, image_builder_nifti, image_builder_nrrd

    staged = work_dir / "panimg-in"
    staged.mkdir()
    data_files = [mhd_data_file(input_dir / name) for name in names if name.lower().endswith(".mhd")]
    for name in [*names, *(data for data in data_files if data and (input_dir / data).exists())]:
        _link_or_copy((input_dir / name).resolve(), staged / name)
    result = convert(
        input_directory=staged,
        output_directory=work_dir / "panimg-out",
        builders=[image_builder_mhd, image_builder_nifti, image_builder_nrrd],
        post_processors=[],  # the only default one makes DZI tiles of TIFFs (pyvips)
        recurse_subdirectories=False,
    )
    files_by_image = {file.image_id: Path(file.file) for file in result.new_image_files}
    images = [
        PanimgImage(
            name=image.name,
            mha_path=files_by_image[image.pk],
            segments=server_segments(image.segments),
            window_center=image.window_center,
            window_width=image.window_width,
        )
        for image in sorted(result.new_images, key=lambda image: image.name)
    ]
    # A file one builder could not read but the next one did is imported, not an error.
    consumed = {Path(path).name for path in result.consumed_files}
    errors = {
        Path(path).name: "; ".join(reasons)
        for path, reasons in result.file_errors.items()
        if Path(path).name not in consumed
    }
    return images, errors


# The server pins panimg 0.15.2 (its uv.lock, docs/gc-api.md §11), whose ``segments`` are None for an 8-bit image with
# more than 64 distinct values: such an image is no segmentation there. The emulator runs panimg 0.18.2 (the oldest
# that installs beside our numpy and SimpleITK), which keeps up to 256; this models the server's limit instead, in
# this one place. The planner refuses the same masks (engine/plan/content.py: MAX_SEGMENTS).
SERVER_PANIMG_MAX_SEGMENTS = 64


def server_segments(segments: frozenset[int] | None) -> list[int] | None:
    """panimg's segments as the server's panimg 0.15.2 gives them: None past 64 distinct values."""
    if segments is None or len(segments) > SERVER_PANIMG_MAX_SEGMENTS:
        return None
    return sorted(segments)


def mhd_data_file(header: Path) -> str | None:
    """The ``ElementDataFile`` an ``.mhd`` header names (its data file goes and counts as consumed with it)."""
    try:
        with header.open("rb") as handle:
            text = handle.read(64 * 1024).decode("latin-1")
    except OSError:
        return None
    match = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", text, re.MULTILINE)
    return Path(match.group(1)).name if match else None


def _link_or_copy(source: Path, target: Path) -> None:
    # Not a symlink: panimg resolves paths, and would then see the stored upload's name, not the file's.
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copyfile(source, target)

"""What Grand Challenge checks when it links an image to a Segmentation socket (contract §10), with its messages.

The server computes an image's ``segments`` at import (panimg): the distinct voxel values of a single-channel 8-bit
integer image with at most 64 of them, else none. Linking to a socket with ``overlay_segments`` then requires
segments, all within the overlay's voxel values ∪ {0}. The texts are the server's (components/models.py
``_validate_voxel_values``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAXIMUM_SEGMENTS_LENGTH = 64
NO_SEGMENTS = (
    "Image segments could not be determined, ensure the voxel values are integers and that it contains no more than "
    f"{MAXIMUM_SEGMENTS_LENGTH} segments. Ensure the image has the minimum and maximum voxel values set as tags if "
    "the image is a TIFF file."
)


def image_segments(path: Path) -> list[int] | None:
    """The sorted distinct voxel values of an 8-bit integer, single-channel image with at most 64; else None."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkInt8):
        return None
    values = np.unique(sitk.GetArrayViewFromImage(image))
    if len(values) > MAXIMUM_SEGMENTS_LENGTH:
        return None
    return [int(v) for v in values]


def allowed_values(overlay_segments: list[Any]) -> set[int]:
    return {int(segment["voxel_value"]) for segment in overlay_segments} | {0}


def _as_set(values: set[int]) -> str:
    return "{" + ", ".join(str(v) for v in sorted(values)) + "}"  # Python's repr of a small int set, ordered


def segmentation_problem(overlay_segments: list[Any], path: Path) -> str | None:
    """The server's message when the image at ``path`` may not be linked to a socket with ``overlay_segments``."""
    if not overlay_segments:
        return None
    segments = image_segments(path)
    if segments is None:
        return NO_SEGMENTS
    allowed = allowed_values(overlay_segments)
    invalid = set(segments) - allowed
    if invalid:
        return (f"The valid voxel values for this segmentation are: {_as_set(allowed)}. This segmentation is "
                f"invalid as it contains the voxel values: {_as_set(invalid)}.")
    return None

"""Socket (ComponentInterface) kinds: the labels the API shows, the codes the server stores, and value schemas.

The API shows a socket's ``kind`` as its label ("Image", "Integer"), but the server's validation messages name the
stored code ("… required for interface kind IMG"), so the emulator keeps both.
"""

from __future__ import annotations

import json
from typing import Any

from gcbulk.emulator.store import Socket
from gcbulk.value_schemas import JSON_KIND_CODES, SCALAR_KINDS, first_error

# ComponentInterface kinds: display label -> stored code (the codes appear in the server's error messages).
KIND_CODES = {
    **JSON_KIND_CODES,  # the value kinds, shared with the planner (gcbulk/value_schemas.py)
    "Image": "IMG",
    "Segmentation": "SEG",
    "Heat Map": "HMAP",
    "Displacement field": "DSPF",
    "DICOM Image Set": "DCMIS",
    "PDF file": "PDF",
    "SQREG file": "SQREG",
    "Thumbnail jpg": "JPEG",
    "Thumbnail png": "PNG",
    "OBJ file": "OBJ",
    "MP4 file": "MP4",
    "Newick tree-format file": "NEWCK",
    "BIOM format": "BIOM",
    "CSV file": "CSV",
    "ZIP file": "ZIP",
}
SUPER_KINDS = ("Image", "File", "Value")
# File sockets whose content is JSON: the server parses and schema-checks the file in the background (docs/gc-api.md §10).
JSON_FILE_KINDS = frozenset(JSON_KIND_CODES) - SCALAR_KINDS


def schema_error(socket: Socket, value: Any) -> str | None:
    """The server's JSONValidator message for a value its socket's schema rejects, else None. The schemas are the
    project's copy of the server's (``gcbulk/value_schemas.py``), the same the planner checks against."""
    error = first_error(socket.kind, socket.schema or None, value)
    if error is None:
        return None
    return f"JSON does not fulfill schema: instance {error.message.replace(str(error.instance) + ' ', '')}"


def json_file_error(socket: Socket, content: bytes) -> str | None:
    """Why the server's background check refuses a JSON file for ``socket`` (docs/gc-api.md §10), else None."""
    try:
        value = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"The file could not be decoded as JSON: {error}"
    return schema_error(socket, value)


def kind_code(socket: Socket) -> str:
    return KIND_CODES.get(socket.kind, socket.kind)


SEGMENTS_UNDETERMINED = (
    "Image segments could not be determined, ensure the voxel values are integers and that it contains no more than "
    "64 segments. Ensure the image has the minimum and maximum voxel values set as tags if the image is a TIFF file."
)


def allowed_voxel_values(socket: Socket) -> set[int]:
    """The overlay's voxel values plus 0 (background), as the server's ``overlay_segments_allowed_values``."""
    return {int(segment["voxel_value"]) for segment in socket.overlay_segments} | {0}


def voxel_value_error(socket: Socket, segments: list[int] | None) -> str | None:
    """Why the server refuses an image with ``segments`` on ``socket`` at linking (docs/gc-api.md §10), else None.

    Only sockets with overlay segments are checked. ``segments`` is None for an image that is not single-channel
    8-bit integer or has more than 64 distinct values (panimg leaves it unset then).
    """
    if not socket.overlay_segments:
        return None
    if segments is None:
        return SEGMENTS_UNDETERMINED
    allowed = allowed_voxel_values(socket)
    invalid = set(segments) - allowed
    if invalid:
        # Python's set repr, as the server formats it: "{0, 1}".
        return (
            f"The valid voxel values for this segmentation are: {_set_repr(allowed)}. "
            f"This segmentation is invalid as it contains the voxel values: {_set_repr(invalid)}."
        )
    return None


def _set_repr(values: set[int]) -> str:
    return "{" + ", ".join(str(v) for v in sorted(values)) + "}"

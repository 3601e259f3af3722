"""Socket (ComponentInterface) kinds: the labels the API shows, the codes the server stores, and value schemas.

The API shows a socket's ``kind`` as its label ("Image", "Integer"), but the server's validation messages name the
stored code ("… required for interface kind IMG"), so the emulator keeps both.
"""

from __future__ import annotations

from typing import Any

from gcbulk.emulator.store import Socket

# ComponentInterface kinds: display label -> stored code (the codes appear in the server's error messages).
KIND_CODES = {
    "String": "STR", "Integer": "INT", "Float": "FLT", "Bool": "BOOL", "Anything": "JSON", "Chart": "CHART",
    "2D bounding box": "2DBB", "Multiple 2D bounding boxes": "M2DB", "Distance measurement": "DIST",
    "Multiple distance measurements": "MDIS", "Point": "POIN", "Multiple points": "MPOI", "Polygon": "POLY",
    "Multiple polygons": "MPOL", "Line": "LINE", "Multiple lines": "MLIN", "Angle": "ANGL",
    "Multiple angles": "MANG", "Ellipse": "ELLI", "Multiple ellipses": "MELL", "Three-point angle": "3ANG",
    "Multiple three-point angles": "M3AN", "Affine transform registration": "ATRG", "Choice": "CHOI",
    "Multiple choice": "MCHO", "Image": "IMG", "Segmentation": "SEG", "Heat Map": "HMAP",
    "Displacement field": "DSPF", "DICOM Image Set": "DCMIS", "PDF file": "PDF", "SQREG file": "SQREG",
    "Thumbnail jpg": "JPEG", "Thumbnail png": "PNG", "OBJ file": "OBJ", "MP4 file": "MP4",
    "Newick tree-format file": "NEWCK", "BIOM format": "BIOM", "CSV file": "CSV", "ZIP file": "ZIP",
}
# The schema every value of a kind must fulfil before the socket's own schema is applied.
KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "String": {"type": "string"},
    "Integer": {"type": "integer"},
    "Float": {"type": "number"},
    "Bool": {"type": "boolean"},
    "Choice": {"type": "string"},
    "Multiple choice": {"type": "array", "items": {"type": "string"}},
}

SUPER_KINDS = ("Image", "File", "Value")


def kind_code(socket: Socket) -> str:
    return KIND_CODES.get(socket.kind, socket.kind)

"""The JSON schema of each value kind, as the server checks it (docs/gc-api.md §10: value sockets for every kind, JSON-kind
file sockets in the background, where a failure is silent).

Hand-written because the API does not serve them: ``components/interfaces/`` shows a socket's ``kind`` label but not
the schema behind it. Each follows the shape Grand Challenge stores for the kind (``version``, ``type``, ``name`` and
the geometry); only what the server requires is required here, so a value this accepts is not refused for a field we
made up, and one it refuses names the field.
"""

from __future__ import annotations

from typing import Any

_NUMBER = {"type": "number"}
_POINT = {"type": "array", "items": _NUMBER, "minItems": 3, "maxItems": 3}
_VERSION = {
    "type": "object",
    "required": ["major", "minor"],
    "properties": {"major": {"type": "integer"}, "minor": {"type": "integer"}},
}


def _annotation(kind: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["version", "type", *required],
        "properties": {"version": _VERSION, "type": {"const": kind}, "name": {"type": "string"}, **properties},
    }


def _many(kind: str, key: str, one: dict[str, Any]) -> dict[str, Any]:
    element = {k: v for k, v in one.items() if k != "properties"} | {
        "properties": {k: v for k, v in one["properties"].items() if k not in ("version", "type")}
    }
    element["required"] = [r for r in one["required"] if r not in ("version", "type")]
    return _annotation(kind, [key], {key: {"type": "array", "items": element}})


_BOX = _annotation(
    "2D bounding box", ["corners"], {"corners": {"type": "array", "items": _POINT, "minItems": 4, "maxItems": 4}}
)
_DISTANCE = _annotation("Distance measurement", ["start", "end"], {"start": _POINT, "end": _POINT})
_POINT_ANNOTATION = _annotation("Point", ["point"], {"point": _POINT})
_POLYGON = _annotation(
    "Polygon",
    ["seed_point", "path_points", "sub_type", "groups"],
    {
        "seed_point": _POINT,
        "path_points": {"type": "array", "items": _POINT},
        "sub_type": {"type": "string"},
        "groups": {"type": "array", "items": {"type": "string"}},
    },
)
_LINE = _annotation("Line", ["seed_points"], {"seed_points": {"type": "array", "items": _POINT}})
_ANGLE = _annotation(
    "Angle",
    ["lines"],
    {
        "lines": {
            "type": "array",
            "minItems": 2,
            "maxItems": 2,
            "items": {"type": "array", "items": _POINT, "minItems": 2, "maxItems": 2},
        }
    },
)
_ELLIPSE = _annotation(
    "Ellipse",
    ["major_axis", "minor_axis"],
    {
        "major_axis": {"type": "array", "items": _POINT, "minItems": 2, "maxItems": 2},
        "minor_axis": {"type": "array", "items": _POINT, "minItems": 2, "maxItems": 2},
    },
)
_THREE_POINT = _annotation(
    "Three-point angle", ["angle"], {"angle": {"type": "array", "items": _POINT, "minItems": 3, "maxItems": 3}}
)

KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "String": {"type": "string"},
    "Integer": {"type": "integer"},
    "Float": {"type": "number"},
    "Bool": {"type": "boolean"},
    "Choice": {"type": "string"},
    "Multiple choice": {"type": "array", "items": {"type": "string"}},
    "Anything": {},
    "Chart": {"type": "object"},
    "2D bounding box": _BOX,
    "Multiple 2D bounding boxes": _many("Multiple 2D bounding boxes", "boxes", _BOX),
    "Distance measurement": _DISTANCE,
    "Multiple distance measurements": _many("Multiple distance measurements", "lines", _DISTANCE),
    "Point": _POINT_ANNOTATION,
    "Multiple points": _many("Multiple points", "points", _POINT_ANNOTATION),
    "Polygon": _POLYGON,
    "Multiple polygons": _many("Multiple polygons", "polygons", _POLYGON),
    "Line": _LINE,
    "Multiple lines": _many("Multiple lines", "lines", _LINE),
    "Angle": _ANGLE,
    "Multiple angles": _many("Multiple angles", "angles", _ANGLE),
    "Ellipse": _ELLIPSE,
    "Multiple ellipses": _many("Multiple ellipses", "ellipses", _ELLIPSE),
    "Three-point angle": _THREE_POINT,
    "Multiple three-point angles": _many("Multiple three-point angles", "angles", _THREE_POINT),
}


def schema_for(socket: dict[str, Any]) -> dict[str, Any] | None:
    """The schema a socket's values must fulfil: its kind's, and the socket's own ``schema`` when the server shows
    one; None when the kind is not a JSON kind (images, PDFs, …)."""
    kind = KIND_SCHEMAS.get(str(socket.get("kind")))
    own = socket.get("schema")
    if kind is None and not isinstance(own, dict):
        return None
    if isinstance(own, dict) and own:
        return {"allOf": [kind or {}, own]}
    return kind

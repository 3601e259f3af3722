"""The JSON schema every value of a socket kind must fulfil, for every value kind the server knows (docs/gc-api.md §3, §10).

The server checks a value socket's JSON against its kind's schema (annotation kinds included) on the PATCH, and a JSON
file socket's parsed content in the background. The annotation schemas follow the shapes the server's
``components/schemas.py`` gives each kind (``version``, ``type``, the geometry in 3-number points); written by hand
because no library ships them. The Chart kind's real schema is the whole Vega-Lite schema; here a chart must be an
object naming at least one Vega-Lite view (``mark``, ``layer``, ``concat``, …), which catches the usual mistakes
without bundling Vega-Lite.
"""

from __future__ import annotations

from typing import Any

POINT: dict[str, Any] = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
VERSION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": "number"},
    "required": ["major", "minor"],
}
PROBABILITY: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
NAMED = {"name": {"type": "string"}, "probability": PROBABILITY}


def _line_of(count: int) -> dict[str, Any]:
    return {"type": "array", "items": POINT, "minItems": count, "maxItems": count}


def _single(kind: str, geometry: dict[str, Any]) -> dict[str, Any]:
    """A single annotation: its geometry plus ``version`` and ``type`` (the kind's label)."""
    return {
        "type": "object",
        "properties": {"version": VERSION, "type": {"enum": [kind]}, **NAMED, **geometry},
        "required": ["version", "type", *geometry],
    }


def _element(geometry: dict[str, Any]) -> dict[str, Any]:
    """One entry of a "Multiple" annotation: the geometry, optionally named and scored."""
    return {"type": "object", "properties": {**NAMED, **geometry}, "required": list(geometry)}


def _multiple(kind: str, key: str, element: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "version": VERSION,
            "type": {"enum": [kind]},
            "name": {"type": "string"},
            key: {"type": "array", "items": element},
        },
        "required": ["version", "type", key],
    }


BOX = {"corners": _line_of(4)}
DISTANCE = {"start": POINT, "end": POINT}
SINGLE_POINT = {"point": POINT}
POLYGON = {
    "seed_point": POINT,
    "path_points": {"type": "array", "items": POINT},
    "sub_type": {"type": "string"},
    "groups": {"type": "array", "items": {"type": "string"}},
}
LINE = {
    "seed_points": {"type": "array", "items": POINT},
    "path_point_lists": {"type": "array", "items": {"type": "array", "items": POINT}},
}
ANGLE = {"lines": {"type": "array", "items": _line_of(2), "minItems": 2, "maxItems": 2}}
ELLIPSE = {"major_axis": _line_of(2), "minor_axis": _line_of(2)}
THREE_POINT_ANGLE = {"angle": _line_of(3)}
# A polygon carries its name and no "type" (it is the element of "Multiple polygons" too).
POLYGON_OBJECT = {
    "type": "object",
    "properties": {"version": VERSION, **NAMED, **POLYGON},
    "required": ["name", "version", *POLYGON],
}
VEGA_LITE_VIEWS = ("mark", "layer", "concat", "hconcat", "vconcat", "facet", "repeat", "spec")

KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "String": {"type": "string"},
    "Integer": {"type": "integer"},
    "Float": {"type": "number"},
    "Bool": {"type": "boolean"},
    "Anything": {},
    "Choice": {"type": "string"},
    "Multiple choice": {"type": "array", "items": {"type": "string"}},
    "Chart": {"type": "object", "anyOf": [{"required": [view]} for view in VEGA_LITE_VIEWS]},
    "Affine transform registration": {
        "type": "object",
        "properties": {
            "3d_affine_transform": {
                "type": "array",
                "minItems": 4,
                "maxItems": 4,
                "items": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
            }
        },
        "required": ["3d_affine_transform"],
    },
    "2D bounding box": _single("2D bounding box", BOX),
    "Multiple 2D bounding boxes": _multiple("Multiple 2D bounding boxes", "boxes", _element(BOX)),
    "Distance measurement": _single("Distance measurement", DISTANCE),
    "Multiple distance measurements": _multiple("Multiple distance measurements", "lines", _element(DISTANCE)),
    "Point": _single("Point", SINGLE_POINT),
    "Multiple points": _multiple("Multiple points", "points", _element(SINGLE_POINT)),
    "Polygon": POLYGON_OBJECT,
    "Multiple polygons": _multiple("Multiple polygons", "polygons", POLYGON_OBJECT),
    "Line": _single("Line", LINE),
    "Multiple lines": _multiple("Multiple lines", "lines", _element(LINE)),
    "Angle": _single("Angle", ANGLE),
    "Multiple angles": _multiple("Multiple angles", "angles", _element(ANGLE)),
    "Ellipse": _single("Ellipse", ELLIPSE),
    "Multiple ellipses": _multiple("Multiple ellipses", "ellipses", _element(ELLIPSE)),
    "Three-point angle": _single("Three-point angle", THREE_POINT_ANGLE),
    "Multiple three-point angles": _multiple("Multiple three-point angles", "angles", _element(THREE_POINT_ANGLE)),
}

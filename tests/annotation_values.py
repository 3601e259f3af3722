"""A table of socket values the server accepts and refuses, per kind, read from its ``components/schemas.py``
(docs/gc-api.md §11). The planner's checks (tests/planner/test_annotation_schemas.py) and the emulator's
(tests/emulator/test_value_schemas.py) both run every row: what one refuses, the other refuses too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

P = [1.0, 2.0, 0.0]
Q = [3.0, 4.0, 0.0]
R = [5.0, 1.0, 0.0]
V = {"major": 1, "minor": 0}
BOX = {"corners": [P, Q, R, P]}
LINE = {"seed_points": [P], "path_point_lists": [[P, Q]]}
POLYGON = {"seed_point": P, "path_points": [P, Q, R], "sub_type": "poly", "groups": []}
ANGLE = {"lines": [[P, Q], [Q, R]]}
ELLIPSE = {"major_axis": [P, Q], "minor_axis": [Q, R]}


@dataclass(frozen=True)
class Row:
    kind: str
    value: Any
    accepted: bool  # what the server does with it
    why: str

    @property
    def id(self) -> str:
        return f"{self.kind}: {'accepted' if self.accepted else 'refused'}: {self.why}"


def _ok(kind: str, value: Any, why: str) -> Row:
    return Row(kind, value, True, why)


def _no(kind: str, value: Any, why: str) -> Row:
    return Row(kind, value, False, why)


def _single(kind: str, **geometry: Any) -> dict[str, Any]:
    return {"type": kind, "version": V, **geometry}


ROWS = [
    _ok("String", "text", "a string"),
    _no("String", 3, "a number"),
    _ok("Integer", 3, "a whole number"),
    _no("Integer", 3.5, "a fraction"),
    _ok("Float", 3.5, "a number"),
    _no("Float", "3.5", "a string"),
    _ok("Bool", True, "a boolean"),
    _no("Bool", "yes", "a string"),
    _ok("Anything", {"any": ["thing"]}, "any JSON"),
    _ok("Choice", "a", "a string"),
    _no("Choice", 1, "a number"),
    _ok("Multiple choice", ["a", "b"], "a list of strings"),
    _no("Multiple choice", "a", "a bare string"),
    _ok("Chart", {"mark": "bar", "data": {"values": []}}, "a Vega-Lite view"),
    _no("Chart", {"data": {}}, "no view"),
    _ok("Affine transform registration", {"3d_affine_transform": [[1, 0, 0, 0]] * 4}, "a 4 x 4 matrix"),
    _no("Affine transform registration", {"3d_affine_transform": [[1]]}, "a 1 x 1 matrix"),
    # 2D bounding boxes
    _ok("2D bounding box", _single("2D bounding box", **BOX), "four corners"),
    _ok("2D bounding box", _single("2D bounding box", name="b", probability=0.5, **BOX), "named and scored"),
    _no("2D bounding box", _single("2D bounding box", corners=[P, Q]), "two corners"),
    _no("2D bounding box", _single("2D bounding box", colour="red", **BOX), "an extra key"),
    _no("2D bounding box", {"type": "2D bounding box", **BOX}, "no version"),
    _no("2D bounding box", _single("2D bounding box", probability=1.5, **BOX), "a probability above 1"),
    _ok("Multiple 2D bounding boxes", _single("Multiple 2D bounding boxes", boxes=[BOX]), "one box"),
    _no("Multiple 2D bounding boxes", _single("Multiple 2D bounding boxes", boxes=[{"corners": P}]), "a flat box"),
    _no(
        "Multiple 2D bounding boxes",
        _single("Multiple 2D bounding boxes", boxes=[{**BOX, "colour": "red"}]),
        "an extra key in an element",
    ),
    _no("Multiple 2D bounding boxes", _single("Multiple 2D bounding boxes", boxes=[], extra=1), "an extra top key"),
    # distances
    _ok("Distance measurement", _single("Distance measurement", start=P, end=Q), "start and end"),
    _no("Distance measurement", _single("Distance measurement", start=P), "no end"),
    _no("Distance measurement", _single("Distance measurement", start=P, end=Q, length=3), "an extra key"),
    _ok(
        "Multiple distance measurements",
        _single("Multiple distance measurements", lines=[{"start": P, "end": Q}]),
        "one",
    ),
    _no("Multiple distance measurements", _single("Multiple distance measurements", lines=[{"start": P}]), "no end"),
    # points
    _ok("Point", _single("Point", point=P), "a 3-D point"),
    _no("Point", _single("Point", point=[1, 2]), "a 2-D point"),
    _ok("Point", {**_single("Point", point=P), "version": {"major": 1.0, "minor": 0}}, "version 1.0 (a whole number)"),
    _no("Point", {**_single("Point", point=P), "version": {"major": -1, "minor": 0}}, "a negative version"),
    _no("Point", {**_single("Point", point=P), "version": {"major": 1.5, "minor": 0}}, "a fractional version"),
    _no(
        "Point", {**_single("Point", point=P), "version": {"major": 1, "minor": 0, "patch": 2}}, "an extra version key"
    ),
    _no("Point", {**_single("Point", point=P), "version": {"major": 1}}, "a version without minor"),
    _ok("Multiple points", _single("Multiple points", points=[{"point": P, "name": "p"}]), "one named point"),
    _no("Multiple points", _single("Multiple points", points=[P]), "a bare point as element"),
    _no("Multiple points", _single("Multiple points", points=[{"point": P, "version": V}]), "version in an element"),
    # polygons
    _ok("Polygon", _single("Polygon", **POLYGON), "type and version, no name"),
    _ok("Polygon", _single("Polygon", name="p", **POLYGON), "named"),
    _no("Polygon", {"version": V, "name": "p", **POLYGON}, "no type"),
    _no("Polygon", _single("Polygon", **{**POLYGON, "path_points": "none"}), "path points not a list"),
    _no("Polygon", _single("Polygon", closed=True, **POLYGON), "an extra key"),
    _ok("Multiple polygons", _single("Multiple polygons", polygons=[{"name": "p", **POLYGON}]), "one polygon"),
    _ok("Multiple polygons", _single("Multiple polygons", polygons=[POLYGON]), "one unnamed polygon"),
    _no("Multiple polygons", _single("Multiple polygons", polygons=[{**POLYGON, "version": V}]), "version in element"),
    _no("Multiple polygons", _single("Multiple polygons", polygons=[{"name": "p"}]), "an element without geometry"),
    # lines
    _ok("Line", _single("Line", **LINE), "seed points and path point lists"),
    _no("Line", _single("Line", seed_points=[P]), "no path_point_lists"),
    _ok("Multiple lines", _single("Multiple lines", lines=[LINE]), "one line"),
    _no("Multiple lines", _single("Multiple lines", lines=[{"seed_points": [P]}]), "an element without path lists"),
    _no("Multiple lines", _single("Multiple lines", lines=[{}]), "an empty element"),
    # angles
    _ok("Angle", _single("Angle", **ANGLE), "two lines"),
    _no("Angle", _single("Angle", lines=[[P, Q]]), "one line"),
    _ok("Multiple angles", _single("Multiple angles", angles=[ANGLE]), "one angle"),
    _no("Multiple angles", _single("Multiple angles", angles=[{"lines": []}]), "an angle without lines"),
    _no("Multiple angles", {**_single("Multiple angles", angles=[]), "probability": 1}, "a top-level probability"),
    # ellipses
    _ok("Ellipse", _single("Ellipse", **ELLIPSE), "two axes"),
    _no("Ellipse", _single("Ellipse", major_axis=[P]), "one axis of one point"),
    _ok("Multiple ellipses", _single("Multiple ellipses", ellipses=[ELLIPSE]), "one ellipse"),
    _no("Multiple ellipses", _single("Multiple ellipses", ellipses=[{"major_axis": [P, Q]}]), "no minor axis"),
    # three-point angles
    _ok("Three-point angle", _single("Three-point angle", angle=[P, Q, R]), "three points"),
    _no("Three-point angle", _single("Three-point angle", angle=[P, Q]), "two points"),
    _ok("Multiple three-point angles", _single("Multiple three-point angles", angles=[{"angle": [P, Q, R]}]), "one"),
    _no("Multiple three-point angles", _single("Multiple three-point angles", angles=[{"angle": [P]}]), "one point"),
]

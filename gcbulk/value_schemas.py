"""The JSON Schema each socket kind's value must fulfil, as the server has them: one place for the planner
(``engine/plan/kind_schemas.py``) and the emulator (``emulator/socket_kinds.py``).

The definitions live in ``schemas/interface-values.schema.json`` (package data), copied from the server's
``app/grandchallenge/components/schemas.py`` (docs/gc-api.md §11): every annotation object forbids extra keys, a
Polygon needs ``type``, the elements of "Multiple polygons" carry no ``version``, a Line needs ``path_point_lists``,
``version`` holds only non-negative whole numbers. The server validates a value against ``{"$ref":
"#/definitions/<kind code>"}`` plus the socket's own ``schema`` (``generate_component_json_schema``); so do we, so a
value the server refuses is refused here, and one it accepts is accepted.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # jsonschema is slow to import: only a check of a JSON value loads it
    import jsonschema

# The socket kinds whose values are JSON: the label the API shows → the code the server's schema definitions use.
JSON_KIND_CODES: dict[str, str] = {
    "String": "STR",
    "Integer": "INT",
    "Float": "FLT",
    "Bool": "BOOL",
    "Anything": "JSON",
    "Chart": "CHART",
    "Choice": "CHOI",
    "Multiple choice": "MCHO",
    "Affine transform registration": "ATRG",
    "2D bounding box": "2DBB",
    "Multiple 2D bounding boxes": "M2DB",
    "Distance measurement": "DIST",
    "Multiple distance measurements": "MDIS",
    "Point": "POIN",
    "Multiple points": "MPOI",
    "Polygon": "POLY",
    "Multiple polygons": "MPOL",
    "Line": "LINE",
    "Multiple lines": "MLIN",
    "Angle": "ANGL",
    "Multiple angles": "MANG",
    "Ellipse": "ELLI",
    "Multiple ellipses": "MELL",
    "Three-point angle": "3ANG",
    "Multiple three-point angles": "M3AN",
}
# The kinds that are plain values, never a JSON file socket's content.
SCALAR_KINDS = frozenset({"String", "Integer", "Float", "Bool", "Choice", "Multiple choice"})


@cache
def _document() -> dict[str, Any]:
    text = files("gcbulk").joinpath("schemas/interface-values.schema.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def kind_schema(kind: str) -> dict[str, Any] | None:
    """The schema of socket kind ``kind`` (its label, e.g. "Multiple points"), or None for a kind whose value is not
    JSON (images, PDFs, …)."""
    code = JSON_KIND_CODES.get(kind)
    if code is None:
        return None
    document = _document()
    return {"$schema": document["$schema"], "definitions": document["definitions"], "$ref": f"#/definitions/{code}"}


def socket_schema(kind: str, own: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema a socket's value must fulfil: its kind's, and the socket's own ``schema`` when it has one (both
    must hold, as the server's ``allOf``); None when neither applies."""
    base = kind_schema(kind)
    if not own:
        return base
    if base is None:
        return own
    return {"$schema": base["$schema"], "definitions": base["definitions"], "allOf": [own, {"$ref": base["$ref"]}]}


@cache
def _validator_for_kind(kind: str) -> jsonschema.Draft7Validator | None:
    import jsonschema

    schema = kind_schema(kind)
    return None if schema is None else jsonschema.Draft7Validator(schema)


def validator(kind: str, own: dict[str, Any] | None = None) -> jsonschema.Draft7Validator | None:
    """A validator for a socket of ``kind`` with its own ``schema`` (None for a non-JSON kind without one). Kind-only
    validators are built once per process."""
    import jsonschema

    if not own:
        return _validator_for_kind(kind)
    schema = socket_schema(kind, own)
    return None if schema is None else jsonschema.Draft7Validator(schema)


def first_error(kind: str, own: dict[str, Any] | None, value: Any) -> jsonschema.ValidationError | None:
    """The error the value's most telling violation gives (``jsonschema``'s best match), or None when it fulfils
    its socket's schema."""
    import jsonschema

    checker = validator(kind, own)
    if checker is None:
        return None
    return jsonschema.exceptions.best_match(checker.iter_errors(value))

"""The JSON of an answer, per question ``answer_type`` (docs/gc-api.md §4): checking it, and example answers for tests.

Scalar types are plain JSON (Text → string, Bool → bool, Number → number, Heading → null), Choice is an option
``id``, Multiple choice a list of ids, Mask ``{"upload_session_pk": uuid}`` with the image in ``answer_image``.
Annotation types are objects with ``type`` (the answer type's name), ``version`` ``{"major": 1, "minor": 0}`` and
their geometry, in the format of Grand Challenge's viewer (points are ``[x, y, z]`` in mm).

The check is the emulator's own, looser than the server's JSON schema: it tests what a client reading answers relies
on (the type tag, the geometry keys, option ids), enough to keep seeded answers honest.
"""

from __future__ import annotations

from typing import Any

from gcbulk.emulator.store import Question

VERSION = {"major": 1, "minor": 0}

# answer type -> the keys its object needs besides "type" and "version"
ANNOTATION_KEYS: dict[str, tuple[str, ...]] = {
    "2D bounding box": ("corners",),
    "Multiple 2D bounding boxes": ("boxes",),
    "Distance measurement": ("start", "end"),
    "Multiple distance measurements": ("lines",),
    "Point": ("point",),
    "Multiple points": ("points",),
    "Polygon": ("seed_point", "path_points", "sub_type", "groups"),
    "Multiple polygons": ("polygons",),
    "Line": ("seed_points", "path_point_lists"),
    "Multiple lines": ("lines",),
    "Angle": ("lines",),
    "Multiple angles": ("angles",),
    "Ellipse": ("major_axis", "minor_axis"),
    "Multiple ellipses": ("ellipses",),
    "Three-point angle": ("angle",),
    "Multiple three-point angles": ("angles",),
}
SCALAR_TYPES: dict[str, tuple[type, ...]] = {"Text": (str,), "Bool": (bool,), "Number": (int, float)}
NON_ANSWERABLE_TYPES = ("Heading",)
ANSWER_TYPES = ("Heading", "Choice", "Multiple choice", "Mask", *SCALAR_TYPES, *ANNOTATION_KEYS)


def answer_error(question: Question, answer: Any) -> str | None:
    """Why ``answer`` is not a valid answer to ``question``, or None. None answers are "empty" (or a pending Mask)."""
    kind = question.answer_type
    if answer is None:
        return None
    option_ids = [option.id for option in question.options]
    if kind == "Heading":
        return "a Heading question takes no answer (null)"
    if kind in SCALAR_TYPES:
        if not isinstance(answer, SCALAR_TYPES[kind]) or (kind == "Number" and isinstance(answer, bool)):
            return f"a {kind} answer must be a JSON {SCALAR_TYPES[kind][0].__name__}"
        return None
    if kind == "Choice":
        return (
            None
            if answer in option_ids and not isinstance(answer, bool)
            else (f"a Choice answer must be one of the option ids {option_ids}")
        )
    if kind == "Multiple choice":
        if not isinstance(answer, list) or any(item not in option_ids or isinstance(item, bool) for item in answer):
            return f"a Multiple choice answer must be a list of option ids from {option_ids}"
        return None
    if kind == "Mask":
        if not isinstance(answer, dict) or set(answer) != {"upload_session_pk"}:
            return 'a Mask answer must be {"upload_session_pk": "<uuid>"}'
        return None
    if kind in ANNOTATION_KEYS:
        if not isinstance(answer, dict) or answer.get("type") != kind:
            return f'a {kind} answer must be an object with "type": "{kind}"'
        missing = [key for key in ("version", *ANNOTATION_KEYS[kind]) if key not in answer]
        return f"a {kind} answer lacks {', '.join(missing)}" if missing else None
    return f"unknown answer type {kind!r}"


# "Multiple …" types hold a list of their singular type's geometries.
SINGULAR = {
    "Multiple 2D bounding boxes": "2D bounding box",
    "Multiple distance measurements": "Distance measurement",
    "Multiple points": "Point",
    "Multiple polygons": "Polygon",
    "Multiple lines": "Line",
    "Multiple angles": "Angle",
    "Multiple ellipses": "Ellipse",
    "Multiple three-point angles": "Three-point angle",
}


def _geometry(kind: str, n: float) -> dict[str, Any]:
    """The geometry of one annotation of singular ``kind``; ``n`` shifts the coordinates so answers differ."""
    a, b, c = [1.0 + n, 2.0, 0.5], [4.0 + n, 6.0, 0.5], [7.0 + n, 2.0, 0.5]
    shapes: dict[str, dict[str, Any]] = {
        "2D bounding box": {"corners": [a, [c[0], a[1], 0.5], [c[0], b[1], 0.5], [a[0], b[1], 0.5]]},
        "Distance measurement": {"start": a, "end": b},
        "Point": {"point": a},
        "Polygon": {"seed_point": a, "path_points": [a, b, c], "sub_type": "poly", "groups": []},
        "Line": {"seed_points": [a, b], "path_point_lists": [[a, b]]},
        "Angle": {"lines": [[a, b], [b, c]]},
        "Ellipse": {"major_axis": [a, c], "minor_axis": [[4.0 + n, 1.0, 0.5], [4.0 + n, 3.0, 0.5]]},
        "Three-point angle": {"angle": [a, b, c]},
    }
    return shapes[kind]


def example_answer(question: Question, n: int = 0) -> Any:
    """A valid answer to ``question``; ``n`` varies it. Mask answers are None: their image comes from an import."""
    kind = question.answer_type
    if kind == "Text":
        return f"example answer {n}"
    if kind == "Bool":
        return n % 2 == 0
    if kind == "Number":
        return 1.5 + n
    if kind == "Choice":
        return question.options[n % len(question.options)].id if question.options else None
    if kind == "Multiple choice":
        return [option.id for option in question.options[: 1 + n % max(len(question.options), 1)]]
    if kind in ("Heading", "Mask"):
        return None
    if kind not in ANNOTATION_KEYS:
        raise ValueError(f"unknown answer type {kind!r}")
    answer: dict[str, Any] = {"type": kind, "version": dict(VERSION)}
    if kind in SINGULAR:
        answer[ANNOTATION_KEYS[kind][0]] = [_geometry(SINGULAR[kind], n), _geometry(SINGULAR[kind], n + 10)]
    else:
        answer.update(_geometry(kind, n))
    return answer

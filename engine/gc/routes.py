"""The closed set of Grand Challenge API route shapes gcbulk calls (docs/gc-api.md §0–§4), for labels that must not grow:
the metrics' ``endpoint`` label is one of these shapes or ``other``, never a raw path. Issue 14: real S3 upload ids
(``2~iCw_lDY8…``, base64-like) were not recognised as ids by a pattern guess, and every upload added series."""

from __future__ import annotations

# ``{id}`` stands for exactly one path segment, whatever its spelling (a UUID, an int pk, an S3 upload id). Shapes
# with a literal segment come before the shape with a placeholder at the same place ("mine/" before "{id}/").
ROUTE_SHAPES: tuple[str, ...] = (
    "gcapi/",
    "uploads/",
    "uploads/{id}/",
    "uploads/{id}/{s3_upload_id}/generate-presigned-urls/",
    "uploads/{id}/{s3_upload_id}/list-parts/",
    "uploads/{id}/{s3_upload_id}/complete-multipart-upload/",
    "uploads/{id}/{s3_upload_id}/abort-multipart-upload/",
    "cases/upload-sessions/",
    "cases/upload-sessions/{id}/",
    "cases/images/",
    "cases/images/{id}/",
    "reader-studies/",
    "reader-studies/questions/",
    "reader-studies/questions/{id}/",
    "reader-studies/display-sets/",
    "reader-studies/display-sets/{id}/",
    "reader-studies/answers/",
    "reader-studies/answers/mine/",
    "reader-studies/answers/{id}/",
    "reader-studies/{id}/",
    "archives/",
    "archives/items/",
    "archives/items/{id}/",
    "archives/{id}/",
    "components/interfaces/",
    "components/interfaces/{id}/",
)
OTHER = "other"
# Image files are served outside the API root (docs/gc-api.md §9: ``<host>/media/images/…``, a 302 to a signed URL).
MEDIA = "media"


def _by_segment_count() -> dict[int, tuple[tuple[str, tuple[str | None, ...]], ...]]:
    """The shapes by their number of segments, each segment a literal or None for ``{id}``: every API request is
    labelled twice (its pacer's key, its metrics), so a path is compared only with the shapes of its length."""
    grouped: dict[int, list[tuple[str, tuple[str | None, ...]]]] = {}
    for shape in ROUTE_SHAPES:
        pattern = tuple(None if part.startswith("{") else part for part in shape.split("/"))
        grouped.setdefault(len(pattern), []).append((shape, pattern))
    return {count: tuple(shapes) for count, shapes in grouped.items()}


_BY_SEGMENT_COUNT = _by_segment_count()


def route_shape(api_relative_path: str) -> str:
    """The shape of ``api_relative_path`` (the part after ``/api/v1/``), or ``other``: a closed set of labels."""
    segments = api_relative_path.split("/")
    for shape, pattern in _BY_SEGMENT_COUNT.get(len(segments), ()):
        for expected, segment in zip(pattern, segments, strict=True):
            if not segment if expected is None else expected != segment:
                break
        else:
            return shape
    return OTHER

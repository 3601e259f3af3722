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

_PARSED = tuple((shape, shape.split("/")) for shape in ROUTE_SHAPES)


def route_shape(api_relative_path: str) -> str:
    """The shape of ``api_relative_path`` (the part after ``/api/v1/``), or ``other``: a closed set of labels."""
    segments = api_relative_path.split("/")
    for shape, pattern in _PARSED:
        if len(pattern) == len(segments) and all(
            (p.startswith("{") and bool(s)) or p == s for p, s in zip(pattern, segments, strict=True)
        ):
            return shape
    return OTHER

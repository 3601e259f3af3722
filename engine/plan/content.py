"""Checks of a file's content that the server makes only after the upload (docs/gc-api.md §10), made before a byte leaves:

* an image file whose header SimpleITK (the server's importer) cannot read;
* a Segmentation socket's mask: single channel, 8-bit integer, at most 64 distinct voxel values, all within the
  socket's ``overlay_segments`` ∪ {0} — the server refuses it after the uploads are already deleted;
* a value socket's JSON and a JSON-kind file socket's file against the kind's schema (``jsonschema``) — a refused
  JSON *file* otherwise just never appears.

Pure (reads files, no network, no database). Results are cached by (path, size, mtime) for the life of the checker,
so follow mode's polls do not read every mask again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from gcbulk.engine.plan import findings as finding
from gcbulk.engine.plan.cases import PlannedItem
from gcbulk.engine.plan.findings import Finding
from gcbulk.engine.plan.kind_schemas import schema_for

MAX_SEGMENTS = 64  # docs/gc-api.md §10: a segmentation has at most 64 distinct voxel values
# Masks above this many voxels are read a slab at a time (about 64 MiB of uint8 per read), so memory stays bounded.
STREAM_VOXELS = 64 * 1024**2
# What the server's SimpleITK importer reads as one image file (TIFF and DICOM go through other importers).
_SITK_SUFFIXES = (".mha", ".mhd", ".nii", ".nii.gz", ".nrrd", ".nhdr")
_SHOW_VALUES = 10


def _sitk_file(name: str) -> bool:
    return name.lower().endswith(_SITK_SUFFIXES)


def overlay_values(socket: Mapping[str, Any]) -> set[int] | None:
    """The voxel values a Segmentation socket allows (``overlay_segments`` entries are ``{"voxel_value": n, …}``)."""
    segments = socket.get("overlay_segments")
    if not isinstance(segments, list) or not segments:
        return None
    values = set()
    for segment in segments:
        value = segment.get("voxel_value") if isinstance(segment, Mapping) else segment
        if isinstance(value, int) and not isinstance(value, bool):
            values.add(value)
    return values


def _listed(values: Any) -> str:
    shown = sorted(int(v) for v in values)
    text = ", ".join(map(str, shown[:_SHOW_VALUES]))
    return "{" + text + (f", … ({len(shown)} in all)" if len(shown) > _SHOW_VALUES else "") + "}"


class ContentChecker:
    """``check(item, …)`` → findings for one planned value, using the socket catalogue (slug → socket dict)."""

    def __init__(
        self,
        catalogue: Mapping[str, Mapping[str, Any] | None],
        cache: dict[tuple[str, int, int, str], tuple[Finding, ...]] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.cache = {} if cache is None else cache

    def check(self, item: PlannedItem, case_root: str, case_path: str, case: str) -> list[Finding]:
        socket = self.catalogue.get(item.socket_slug)
        if not socket:
            return []
        if item.value_json is not None:
            return self._json(
                socket,
                json.loads(item.value_json),
                item.value_path or case_path,
                item.value_path,
                item.socket_slug,
                case,
            )
        if not item.files:
            return []
        main = item.files[0]
        path = os.path.join(case_root, main.path)
        key = (path, main.size, main.mtime_ns, item.socket_slug)
        if key not in self.cache:
            self.cache[key] = tuple(self._file(socket, path, main.path, item.socket_slug, case))
        return list(self.cache[key])

    def _file(self, socket: Mapping[str, Any], path: str, rel: str, slug: str, case: str) -> list[Finding]:
        super_kind = socket.get("super_kind")
        if super_kind == "File" and schema_for(dict(socket)) is not None:
            try:
                with open(path, "rb") as handle:
                    value = json.load(handle)
            except ValueError as exc:
                return [finding.bad_json(path, rel, str(exc), case)]
            except OSError as exc:
                return [finding.unreadable(path, rel, exc.strerror or str(exc))]
            return self._json(socket, value, path, rel, slug, case)
        if super_kind == "Image" and _sitk_file(rel):
            return self._image(socket, path, rel, slug, case)
        return []

    def _json(
        self, socket: Mapping[str, Any], value: Any, path: str, rel: str | None, slug: str, case: str
    ) -> list[Finding]:
        schema = schema_for(dict(socket))
        if schema is None:
            return []
        import jsonschema  # only when a JSON-kind socket is planned: it is slow to import

        error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(value))
        if error is None:
            return []
        where = "/".join(map(str, error.absolute_path)) or "the value"
        return [finding.schema_mismatch(path, rel, slug, str(socket.get("kind")), f"{where}: {error.message}", case)]

    def _image(self, socket: Mapping[str, Any], path: str, rel: str, slug: str, case: str) -> list[Finding]:
        import SimpleITK as sitk  # noqa: N813 - only when an image socket is checked: it is slow to import

        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            return [finding.unreadable_image(path, rel, slug, reason, case)]
        allowed = overlay_values(socket)
        if socket.get("kind") != "Segmentation" or allowed is None:
            # docs/gc-api.md §10: the server's mask check is against the socket's overlay_segments; a socket without them
            # states no allowed values, so there is nothing certain to check.
            return []
        problems = []
        components = reader.GetNumberOfComponents()
        if components != 1:
            problems.append(f"it has {components} channels; a segmentation has one")
        pixel = reader.GetPixelID()
        if pixel not in (sitk.sitkUInt8, sitk.sitkInt8):
            problems.append(
                f"its voxels are {sitk.GetPixelIDValueAsString(pixel)}; a segmentation is 8-bit integer (uint8 or int8)"
            )
        if problems:
            return [finding.bad_segmentation(path, rel, slug, "; ".join(problems), case)]
        try:
            values = _distinct_values(reader)
        except RuntimeError as exc:
            return [finding.unreadable_image(path, rel, slug, str(exc).strip().splitlines()[-1], case)]
        if len(values) > MAX_SEGMENTS:
            problems.append(f"it has {len(values)} distinct voxel values; at most {MAX_SEGMENTS} are allowed")
        outside = values - allowed - {0}
        if outside:
            problems.append(
                f"the valid voxel values for this segmentation are {_listed(allowed | {0})}; it "
                f"contains the voxel values {_listed(outside)}"
            )
        return [finding.bad_segmentation(path, rel, slug, "; ".join(problems), case)] if problems else []


def _distinct_values(reader: Any) -> set[int]:
    """The voxel values of the image ``reader`` is set to, a slab of the last axis at a time for large images."""
    import numpy as np
    import SimpleITK as sitk  # noqa: N813

    size = list(reader.GetSize())
    voxels = math.prod(size)

    def unique(image: Any) -> set[int]:
        # The array view borrows the image's buffer: ``image`` must stay alive while numpy reads it.
        voxels = sitk.GetArrayViewFromImage(image)
        if voxels.dtype.itemsize == 1:  # 8-bit, as a segmentation must be: a histogram, not np.unique's sort
            offset = 128 if voxels.dtype == np.int8 else 0
            counts = np.bincount((voxels.ravel().view(np.uint8) ^ offset) if offset else voxels.ravel(), minlength=256)
            return {int(v) - offset for v in np.flatnonzero(counts)}
        return {int(v) for v in np.unique(voxels)}

    if voxels <= STREAM_VOXELS or len(size) < 2:
        return unique(reader.Execute())
    per_slice = voxels // size[-1]
    step = max(1, STREAM_VOXELS // per_slice)
    values: set[int] = set()
    for start in range(0, size[-1], step):
        count = min(step, size[-1] - start)
        reader.SetExtractIndex([0] * (len(size) - 1) + [start])
        reader.SetExtractSize(size[:-1] + [count])
        values.update(unique(reader.Execute()))
        if len(values) > MAX_SEGMENTS + _SHOW_VALUES:
            break  # already refused; reading on would not change the verdict
    return values

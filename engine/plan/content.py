"""Checks of a file's content that the server makes only after the upload (docs/gc-api.md §10), made before a byte leaves:

* an image file whose header SimpleITK (the server's importer) cannot read;
* a Segmentation socket's mask: single channel, 8-bit integer, at most 64 distinct voxel values, all within the
  socket's ``overlay_segments`` ∪ {0} — the server refuses it after the uploads are already deleted;
* a value socket's JSON and a JSON-kind file socket's file against the kind's schema (``jsonschema``) — a refused
  JSON *file* otherwise just never appears.

Every read has a budget (``engine/plan/metaimage.py``'s ``ReadBudget``): headers are read within 64 KiB, a mask's
voxels are inflated once as a stream and counted a chunk at a time, and a scan that would pass the per-file byte or
time budget stops with a finding naming the budget. A mask on another grid than its case's image is a warning naming
both files.

Pure (reads files, no network, no database). Each result is kept in a ``ContentCache`` under the file's path, size,
mtime and inode (``ContentKey``): the service passes one that persists in the ledger, so a re-plan — a second one-shot
run, or follow mode's next poll — reads no file that did not change; the default lives as long as the checker.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Protocol

from gcbulk.engine.plan import findings as finding
from gcbulk.engine.plan.cases import PlannedCase, PlannedItem
from gcbulk.engine.plan.findings import Finding
from gcbulk.engine.plan.kind_schemas import schema_for
from gcbulk.engine.plan.metaimage import (
    MAX_DEFLATE_RATIO,
    BadData,
    BadHeader,
    BudgetExceeded,
    MetaHeader,
    NotMetaImage,
    ReadBudget,
    data_path,
    read_header,
    voxel_chunks,
)

MAX_SEGMENTS = 64  # docs/gc-api.md §10: a segmentation has at most 64 distinct voxel values
# Masks above this many voxels are read a slab at a time (about 64 MiB of uint8 per read), so memory stays bounded.
STREAM_VOXELS = 64 * 1024**2
# What the server's SimpleITK importer reads as one image file (TIFF and DICOM go through other importers).
_SITK_SUFFIXES = (".mha", ".mhd", ".nii", ".nii.gz", ".nrrd", ".nhdr")
_SHOW_VALUES = 10
_METAIMAGE_SUFFIXES = (".mha", ".mhd")
# Two grids are the same when their spacing, origin and direction agree to this (relative) tolerance: headers written
# by different tools round the same numbers differently.
_GRID_TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class Grid:
    """Where an image's voxels lie: size, spacing, origin, direction (from its header alone)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def differences(self, other: Grid) -> list[str]:
        """What differs between two grids, in words; empty when they agree."""
        out = []
        if self.size != other.size:
            out.append(f"size {list(self.size)} against {list(other.size)}")
        for name in ("spacing", "origin", "direction"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if len(mine) != len(theirs) or not all(
                math.isclose(a, b, rel_tol=_GRID_TOLERANCE, abs_tol=_GRID_TOLERANCE)
                for a, b in zip(mine, theirs, strict=True)
            ):
                out.append(f"{name} {_rounded(mine)} against {_rounded(theirs)}")
        return out


@dataclass(frozen=True, slots=True)
class ContentKey:
    """A file's content as the checks saw it: when any of these changes, the file is read again."""

    path: str  # as planned: the case root joined with the file's path
    size: int
    mtime_ns: int
    inode: int
    socket: str  # the same file checked against another socket is another check
    definition: str  # a digest of the socket as the server describes it: new overlay values are checked anew


@dataclass(frozen=True, slots=True)
class CheckedContent:
    """What the checks of one file found, and its image grid (header reads only) for the case's grid check."""

    findings: tuple[Finding, ...]
    grid: Grid | None

    def as_json(self) -> tuple[str, str | None]:
        """(findings, grid) as JSON text, for a store that keeps it between runs."""
        # Field by field, not dataclasses.asdict: its recursive deep copy was an eighth of a first plan's time.
        grid = None if self.grid is None else json.dumps({name: getattr(self.grid, name) for name in Grid.__slots__})
        return json.dumps([f.as_dict() for f in self.findings]), grid

    @classmethod
    def from_json(cls, findings: str, grid: str | None) -> CheckedContent:
        loaded = (
            []  # what nearly every file's checks found: nothing to decode
            if findings == "[]"
            else [Finding(**{**data, "files": tuple(data.get("files", ()))}) for data in json.loads(findings)]
        )
        if grid is None:
            return cls(tuple(loaded), None)
        fields = json.loads(grid)
        return cls(tuple(loaded), Grid(**{name: tuple(value) for name, value in fields.items()}))


class ContentCache(Protocol):
    """Where checked files' results are kept: ``get`` gives the result for exactly this key (path, size, mtime,
    inode, socket) or None; ``put`` keeps one (replacing what the same path and socket had)."""

    def get(self, key: ContentKey) -> CheckedContent | None: ...

    def put(self, key: ContentKey, checked: CheckedContent) -> None: ...


class MemoryContentCache:
    """A ``ContentCache`` for one process: a dict, keyed like the ledger's (one entry per path and socket)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[ContentKey, CheckedContent]] = {}

    def get(self, key: ContentKey) -> CheckedContent | None:
        entry = self._entries.get((key.path, key.socket))
        return entry[1] if entry is not None and entry[0] == key else None

    def put(self, key: ContentKey, checked: CheckedContent) -> None:
        self._entries[(key.path, key.socket)] = (key, checked)


def _rounded(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _sitk_file(name: str) -> bool:
    return name.lower().endswith(_SITK_SUFFIXES)


def _reads_content(socket: Mapping[str, Any], rel: str) -> bool:
    """Whether the checks read this file at all: an image the server's SimpleITK importer reads, or a JSON file of a
    kind with a schema. Other files (TIFF, DICOM, a file socket's PDF) have nothing to check here."""
    super_kind = socket.get("super_kind")
    if super_kind == "Image":
        return _sitk_file(rel)
    return super_kind == "File" and schema_for(dict(socket)) is not None


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
    """``check(item, …)`` → findings for one planned value, using the socket catalogue (slug → socket dict);
    ``check_grids(items, …)`` → a warning for each segmentation that does not lie on its case's image grid."""

    def __init__(
        self,
        catalogue: Mapping[str, Mapping[str, Any] | None],
        cache: ContentCache | None = None,
        budget: ReadBudget | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.cache: ContentCache = MemoryContentCache() if cache is None else cache
        self.budget = budget or ReadBudget()
        # The grids of the case being checked, (path, socket) → grid: ``check_grids`` reads them and forgets them, so
        # nothing here grows with the cases planned.
        self._grids: dict[tuple[str, str], Grid] = {}
        # Results ``read_ahead`` asked for — a read under way on another thread, or what the cache had — each with
        # whether the file is read: ``check`` takes them instead of asking again.
        # Keyed by (path, socket), as ``check`` asks before it stats the file: one stat per file, not two.
        self._read_ahead: dict[tuple[str, str], tuple[ContentKey, Future[CheckedContent] | CheckedContent, bool]] = {}
        self._digests: dict[str, str] = {}  # socket slug → ContentKey.definition
        self.files_read = 0  # files whose content the checks read (new or changed since the cache's result)
        self.files_cached = 0  # files whose result came from the cache: not read

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
        if not item.files or not _reads_content(socket, item.files[0].path):
            return []
        main = item.files[0]
        path = os.path.join(case_root, main.path)
        checked: CheckedContent | None
        ahead = self._read_ahead.pop((path, item.socket_slug), None)
        if ahead is not None:
            # Keyed by the stat ``read_ahead`` took just before it started the read, as this would before its own.
            key, result, read = ahead
            checked = result.result() if isinstance(result, Future) else result
        else:
            try:
                stat = os.stat(path)
            except OSError as exc:
                return [finding.unreadable(path, main.path, exc.strerror or str(exc))]
            key = ContentKey(path, stat.st_size, stat.st_mtime_ns, stat.st_ino, item.socket_slug, self._digest(socket))
            checked, read = self.cache.get(key), False
        if checked is None:
            checked, read = self._file(socket, path, main.path, item.socket_slug, case), True
        if read:
            self.cache.put(key, checked)
            self.files_read += 1
        else:
            self.files_cached += 1
        if checked.grid is not None:
            self._grids[(path, item.socket_slug)] = checked.grid
        return list(checked.findings)

    def _digest(self, socket: Mapping[str, Any]) -> str:
        slug = str(socket.get("slug"))
        if slug not in self._digests:
            described = json.dumps(socket, sort_keys=True, default=str).encode()
            self._digests[slug] = hashlib.sha256(described).hexdigest()[:16]
        return self._digests[slug]

    def read_ahead(self, cases: Sequence[PlannedCase], case_root: str, readers: Executor) -> list[ContentKey]:
        """Starts reading the files of ``cases`` that ``check`` would read (not in the cache) on ``readers``' threads
        and returns at once, so the header reads of many files overlap each other and the planning of the cases before
        them: SimpleITK and the inflating of a mask release the GIL. Each read keeps its own budget (``ReadBudget``);
        ``check`` then takes the result, waiting for it if needed, instead of reading. Returns the keys asked for, for
        ``forget`` once their cases are checked; the caller bounds the memory held by the cases it passes at once."""
        keys: list[ContentKey] = []
        for case in cases:
            for item in case.items:
                socket = self.catalogue.get(item.socket_slug)
                if not socket or item.value_json is not None or not item.files:
                    continue
                if not _reads_content(socket, item.files[0].path):
                    continue
                main = item.files[0]
                path = os.path.join(case_root, main.path)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue  # ``check`` reports it
                key = ContentKey(
                    path, stat.st_size, stat.st_mtime_ns, stat.st_ino, item.socket_slug, self._digest(socket)
                )
                if (path, item.socket_slug) in self._read_ahead:
                    continue
                keys.append(key)
                cached = self.cache.get(key)
                if cached is not None:
                    self._read_ahead[(path, item.socket_slug)] = (key, cached, False)
                    continue
                read = readers.submit(self._file, socket, path, main.path, item.socket_slug, case.title)
                self._read_ahead[(path, item.socket_slug)] = (key, read, True)
        return keys

    def forget(self, keys: Iterable[ContentKey]) -> None:
        """Drops what ``read_ahead`` found for ``keys`` and ``check`` did not take (a case never checked):
        nothing here outlives the cases it was read for."""
        for key in keys:
            self._read_ahead.pop((key.path, key.socket), None)

    def check_grids(self, items: Sequence[PlannedItem], case_root: str, case: str) -> list[Finding]:
        """A warning for each Segmentation value whose grid matches none of the case's other images (the CT it
        outlines), naming both files. Uses the grids ``check`` read; call it after ``check`` on every item."""
        images: list[tuple[PlannedItem, Grid]] = []
        masks: list[tuple[PlannedItem, Grid]] = []
        grids, self._grids = self._grids, {}
        for item in items:
            socket = self.catalogue.get(item.socket_slug)
            if not socket or socket.get("super_kind") != "Image" or not item.files:
                continue
            main = item.files[0]
            grid = grids.get((os.path.join(case_root, main.path), item.socket_slug))
            if grid is not None:
                (masks if socket.get("kind") == "Segmentation" else images).append((item, grid))
        findings = []
        for mask, grid in masks:
            if not images or any(not grid.differences(image_grid) for _, image_grid in images):
                continue
            image, image_grid = images[0]
            findings.append(
                finding.grid_mismatch(
                    os.path.join(case_root, mask.files[0].path),
                    mask.files[0].path,
                    mask.socket_slug,
                    image.files[0].path,
                    image.socket_slug,
                    "; ".join(grid.differences(image_grid)),
                    case,
                )
            )
        return findings

    def _file(self, socket: Mapping[str, Any], path: str, rel: str, slug: str, case: str) -> CheckedContent:
        if socket.get("super_kind") == "Image" and _sitk_file(rel):
            return self._image(socket, path, rel, slug, case)
        return CheckedContent(tuple(self._file_findings(socket, path, rel, slug, case)), None)

    def _file_findings(self, socket: Mapping[str, Any], path: str, rel: str, slug: str, case: str) -> list[Finding]:
        super_kind = socket.get("super_kind")
        if super_kind == "File" and schema_for(dict(socket)) is not None:
            try:
                size = os.path.getsize(path)
            except OSError as exc:
                return [finding.unreadable(path, rel, exc.strerror or str(exc))]
            if size > self.budget.json_bytes:
                reason = f"the JSON file has {size} bytes, over the budget of {self.budget.json_bytes} bytes per file"
                return [finding.check_budget(path, rel, slug, reason, case)]
            try:
                with open(path, "rb") as handle:
                    value = json.load(handle)
            except ValueError as exc:
                return [finding.bad_json(path, rel, str(exc), case)]
            except OSError as exc:
                return [finding.unreadable(path, rel, exc.strerror or str(exc))]
            return self._json(socket, value, path, rel, slug, case)
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

    def _meta_header(self, path: str, rel: str) -> MetaHeader | None:
        """The MetaImage header of an .mha/.mhd file (read within the header budget), or None for other formats and
        for files whose header the planner already judged (``engine/plan/filesets.py``)."""
        if not rel.lower().endswith(_METAIMAGE_SUFFIXES):
            return None
        try:
            return read_header(path, self.budget)
        except (OSError, NotMetaImage, BadHeader):
            return None

    def _image(self, socket: Mapping[str, Any], path: str, rel: str, slug: str, case: str) -> CheckedContent:
        import SimpleITK as sitk  # noqa: N813 - only when an image socket is checked: it is slow to import

        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            return CheckedContent((finding.unreadable_image(path, rel, slug, reason, case),), None)
        grid = Grid(
            tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(reader.GetDirection())
        )
        return CheckedContent(tuple(self._image_findings(reader, socket, path, rel, slug, case)), grid)

    def _image_findings(
        self, reader: Any, socket: Mapping[str, Any], path: str, rel: str, slug: str, case: str
    ) -> list[Finding]:
        """The checks of an image whose header SimpleITK read (``reader``): NIfTI capacity, a segmentation's voxels."""
        import SimpleITK as sitk  # noqa: N813

        over = _nifti_capacity_problem(reader, path, rel)
        if over is not None:
            return [finding.bad_image_header(path, (rel,), over, case)]
        allowed = overlay_values(socket)
        if socket.get("kind") != "Segmentation" or allowed is None:
            # docs/gc-api.md §10: the server's mask check is against the socket's overlay_segments; a socket without them
            # states no allowed values, so there is nothing certain to check.
            return []
        problems = []
        dimensions = reader.GetDimension()
        if dimensions > 3:
            problems.append(f"it has {dimensions} dimensions; a segmentation is 2-D or 3-D")
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
        header = self._meta_header(path, rel)
        try:
            if header is not None:
                values = _distinct_meta_values(header, path, self.budget, signed=pixel == sitk.sitkInt8)
            else:
                values = _distinct_values(reader, self.budget)
        except BudgetExceeded as exc:
            return [finding.check_budget(path, rel, slug, str(exc), case)]
        except BadData as exc:
            return [finding.unreadable_image(path, rel, slug, str(exc), case)]
        except RuntimeError as exc:
            return [finding.unreadable_image(path, rel, slug, str(exc).strip().splitlines()[-1], case)]
        except OSError as exc:
            return [finding.unreadable(path, rel, exc.strerror or str(exc))]
        if len(values) > MAX_SEGMENTS:
            problems.append(f"it has {len(values)} distinct voxel values; at most {MAX_SEGMENTS} are allowed")
        outside = values - allowed - {0}
        if outside:
            problems.append(
                f"the valid voxel values for this segmentation are {_listed(allowed | {0})}; it "
                f"contains the voxel values {_listed(outside)}"
            )
        return [finding.bad_segmentation(path, rel, slug, "; ".join(problems), case)] if problems else []


def _nifti_capacity_problem(reader: Any, path: str, rel: str) -> str | None:
    """Why a NIfTI file cannot hold the voxels its header claims, or None. (MetaImage headers are checked by the
    planner, ``engine/plan/metaimage.py``; SimpleITK reads any claim, and the importer fails on it after the upload.)"""
    lower = rel.lower()
    if not lower.endswith((".nii", ".nii.gz")):
        return None
    import numpy as np
    import SimpleITK as sitk  # noqa: N813

    size = list(reader.GetSize())
    # The element size from the pixel type: an empty image of that type has the numpy dtype SimpleITK maps it to.
    probe = sitk.Image([1] * len(size), reader.GetPixelID(), reader.GetNumberOfComponents())
    element = np.dtype(sitk.GetArrayViewFromImage(probe).dtype).itemsize
    claimed = math.prod(size) * reader.GetNumberOfComponents() * element
    stored = os.path.getsize(path)
    holds = stored * MAX_DEFLATE_RATIO if lower.endswith(".gz") else stored
    if claimed <= holds:
        return None
    how = (
        f"{stored} compressed bytes (zlib inflates at most {MAX_DEFLATE_RATIO}:1)"
        if lower.endswith(".gz")
        else (f"{stored} bytes")
    )
    return f"the header claims {math.prod(size)} voxels, {claimed} bytes of voxel data, more than the file's {how} hold"


def _distinct_meta_values(header: MetaHeader, path: str, budget: ReadBudget, *, signed: bool) -> set[int]:
    """The voxel values of an 8-bit MetaImage, its data inflated once as a stream (``metaimage.voxel_chunks``) and
    counted with a histogram a chunk at a time: memory stays at one chunk whatever the image's size."""
    import numpy as np

    counts = np.zeros(256, dtype=np.int64)
    for chunk in voxel_chunks(header, data_path(path, header), budget):
        counts += np.bincount(np.frombuffer(chunk, dtype=np.uint8), minlength=256)
    present = np.flatnonzero(counts)
    return {int(v) - 256 if signed and v > 127 else int(v) for v in present}


def _distinct_values(reader: Any, budget: ReadBudget) -> set[int]:
    """The voxel values of the image ``reader`` is set to, a slab of the last axis at a time for large images, within
    the budget's bytes (checked on the header's claim, before a voxel is read) and time (checked between slabs)."""
    import numpy as np
    import SimpleITK as sitk  # noqa: N813

    size = list(reader.GetSize())
    voxels = math.prod(size)
    claimed = voxels  # one byte a voxel: only a single-channel 8-bit image is scanned
    if claimed > budget.scan_bytes:
        raise BudgetExceeded(
            f"its {claimed} bytes of voxel data are over the scan budget of {budget.scan_bytes} bytes per file"
        )
    deadline = time.monotonic() + budget.seconds

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
        if time.monotonic() > deadline:
            raise BudgetExceeded(
                f"scanning its voxels took over the time budget of {budget.seconds:g} s per file "
                f"({start + count} of {size[-1]} slices read)"
            )
    return values

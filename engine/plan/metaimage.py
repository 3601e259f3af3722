"""MetaImage (``.mha`` / ``.mhd``) headers and voxels, read within a budget.

Hand-written rather than left to SimpleITK for two reasons a hostile case tree exposes:

* SimpleITK trusts the header: a header claiming 10¹² voxels makes it fail with an unrelated OS error ("No such file
  or directory"), and nothing compares the claim with what the file can hold.
* ITK cannot stream a compressed MetaImage: each slab read with ``SetExtractIndex`` inflates the data from its first
  byte again, so checking a mask slab by slab costs (slabs × size) — quadratic: a mask that inflates to 16 GiB never
  finishes. Here the data is inflated once, as a stream, a bounded chunk at a time, and the scan stops at the header's
  own byte count (a stream that inflates beyond it is a compression bomb) or at the budget.

Pure: reads only the file it is given and the data file it names, no network, no database.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

HEADER_BUDGET = 64 * 1024  # a MetaImage header is a few hundred bytes; a file without its end in 64 KiB is not one
# zlib's deflate cannot shrink data by more than about 1032:1 (RFC 1950/1951: a 258-byte match costs at least 2 bits),
# so a compressed stream of N bytes inflates to at most ~1032 N. A header claiming more lies.
MAX_DEFLATE_RATIO = 1032
# How a MetaImage header starts (MetaIO writes ObjectType first; hand-written ones often start with NDims).
_FIRST_KEYS = (b"ObjectType", b"NDims", b"ObjectSubType", b"Comment")
_READ_CHUNK = 1024**2  # compressed bytes fed to the inflater per step
_INFLATE_CHUNK = 4 * 1024**2  # inflated bytes per step; the histogram casts them to 8-byte ints: 32 MiB a scan

# MetaIO's element types (metaTypes.h) and their sizes in bytes.
ELEMENT_SIZES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


@dataclass(frozen=True, slots=True)
class ReadBudget:
    """How much work one file's content check may cost; a check that would cost more says which budget it hit."""

    header_bytes: int = HEADER_BUDGET
    # Voxel data inflated and scanned per file (a mask's values are counted): 2 GiB is a 1024 × 1024 × 2048 mask.
    scan_bytes: int = 2 * 1024**3
    seconds: float = 60.0  # wall time per file's voxel scan
    json_bytes: int = 64 * 1024**2  # a JSON file parsed for a file socket's schema check (parsing costs ~10x in memory)


class BudgetExceeded(Exception):
    """The scan stopped at a budget; the message names it."""


class BadData(Exception):
    """The voxel data is not what the header says (a compression bomb, a truncated or corrupt stream)."""


@dataclass(frozen=True, slots=True)
class MetaHeader:
    """What a MetaImage header claims. ``data_file`` is ``LOCAL`` (pixels follow the header) or a file name."""

    dims: tuple[int, ...] | None  # None: no DimSize line (SimpleITK's own read says what is wrong)
    element_type: str | None
    components: int
    compressed: bool
    compressed_size: int | None
    data_file: str
    header_length: int  # bytes up to and including the ElementDataFile line
    spacing: tuple[float, ...] | None
    origin: tuple[float, ...] | None
    direction: tuple[float, ...] | None

    @property
    def voxels(self) -> int | None:
        return None if self.dims is None else math.prod(self.dims)

    @property
    def element_size(self) -> int | None:
        return None if self.element_type is None else ELEMENT_SIZES[self.element_type]

    @property
    def data_bytes(self) -> int | None:
        """The voxel data's size once inflated, as the header claims it (None when the header does not say)."""
        if self.voxels is None or self.element_size is None:
            return None
        return self.voxels * self.element_size * self.components

    @property
    def local(self) -> bool:
        return self.data_file.upper() == "LOCAL"


class NotMetaImage(Exception):
    """The file has no MetaImage header (no ``ElementDataFile`` line within the header budget)."""


class HeaderOverBudget(NotMetaImage):
    """The file starts as a MetaImage header but does not end it within the header budget."""


class BadHeader(Exception):
    """The header is a MetaImage header that the importer would refuse; the message says why."""


def _ints(text: str, key: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split())
    except ValueError:
        raise BadHeader(f"{key} = {text!r} is not a list of whole numbers") from None


def _floats(text: str, key: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split())
    except ValueError:
        raise BadHeader(f"{key} = {text!r} is not a list of numbers") from None


def read_header(path: str, budget: ReadBudget = ReadBudget()) -> MetaHeader:
    """The header of the MetaImage at ``path``, reading at most ``budget.header_bytes``.

    Raises NotMetaImage when the file has no header, BadHeader when the header would be refused, OSError when the
    file cannot be read.
    """
    with open(path, "rb") as handle:
        head = handle.read(budget.header_bytes)
    fields: dict[str, str] = {}
    at = 0
    while at < len(head):
        end = head.find(b"\n", at)
        if end < 0:
            break  # the last line is incomplete: the header does not end within the budget
        line = head[at:end].decode("latin-1").strip()
        at = end + 1
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        fields[key] = value
        if key == "ElementDataFile":  # MetaIO: the last header field; pixels (LOCAL) start on the next byte
            return _header(fields, at)
    if len(head) >= budget.header_bytes:
        message = f"no ElementDataFile line within the first {budget.header_bytes} bytes (the header budget)"
        if head.lstrip().startswith(_FIRST_KEYS):
            raise HeaderOverBudget(message)
        raise NotMetaImage(message)
    raise NotMetaImage("the header has no ElementDataFile line")


def _header(fields: dict[str, str], length: int) -> MetaHeader:
    dims_text = fields.get("DimSize")
    dims = None if dims_text is None else _ints(dims_text, "DimSize")
    if dims is not None:
        if not dims:
            raise BadHeader("DimSize is empty")
        if any(d <= 0 for d in dims):
            raise BadHeader(f"DimSize = {dims_text} has a size that is zero or negative; every size must be positive")
        ndims_text = fields.get("NDims")
        if ndims_text is not None:
            ndims = _ints(ndims_text, "NDims")
            if len(ndims) != 1 or ndims[0] != len(dims):
                raise BadHeader(f"NDims = {ndims_text} but DimSize = {dims_text} gives {len(dims)} sizes")
    element_type = fields.get("ElementType")
    if element_type is not None and element_type not in ELEMENT_SIZES:
        raise BadHeader(f"ElementType = {element_type!r} is not a MetaImage element type")
    components_text = fields.get("ElementNumberOfChannels", "1")
    components = _ints(components_text, "ElementNumberOfChannels")
    if len(components) != 1 or components[0] < 1:
        raise BadHeader(f"ElementNumberOfChannels = {components_text} is not a positive whole number")
    compressed = fields.get("CompressedData", "False").lower() == "true"
    compressed_size = None
    if compressed and "CompressedDataSize" in fields:
        sizes = _ints(fields["CompressedDataSize"], "CompressedDataSize")
        compressed_size = sizes[0] if len(sizes) == 1 and sizes[0] > 0 else None
    direction_key = next((k for k in ("TransformMatrix", "Rotation", "Orientation") if k in fields), None)
    return MetaHeader(
        dims=dims,
        element_type=element_type,
        components=components[0],
        compressed=compressed,
        compressed_size=compressed_size,
        data_file=fields["ElementDataFile"],
        header_length=length,
        spacing=_floats(fields["ElementSpacing"], "ElementSpacing") if "ElementSpacing" in fields else None,
        origin=_floats(fields["Offset"], "Offset")
        if "Offset" in fields
        else (_floats(fields["Origin"], "Origin") if "Origin" in fields else None),
        direction=_floats(fields[direction_key], direction_key) if direction_key else None,
    )


def capacity_problem(header: MetaHeader, data_size: int, where: str) -> str | None:
    """Why ``data_size`` bytes of stored data (after the header, or the data file) cannot be the voxels the header
    claims, or None. ``where`` names the data ("the file", "its data file 'ct.raw'")."""
    claimed = header.data_bytes
    if claimed is None:
        return None
    per_voxel = claimed // header.voxels if header.voxels else 0
    claim = f"the header claims {header.voxels} voxels × {per_voxel} bytes = {claimed} bytes"
    if not header.compressed:
        if data_size != claimed:
            return f"{claim}, but {where} holds {data_size} bytes of voxel data"
        return None
    if header.compressed_size is not None and header.compressed_size != data_size:
        return f"CompressedDataSize = {header.compressed_size}, but {where} holds {data_size} bytes of compressed data"
    if claimed > data_size * MAX_DEFLATE_RATIO:
        return (
            f"{claim}, more than the {data_size} compressed bytes in {where} can hold (zlib inflates at most "
            f"{MAX_DEFLATE_RATIO}:1)"
        )
    return None


def voxel_chunks(header: MetaHeader, data_path: str, budget: ReadBudget) -> Iterator[bytes]:
    """The voxel data of the image, inflated once as a stream, in chunks of at most 4 MiB.

    Stops with BudgetExceeded at ``budget.scan_bytes`` or ``budget.seconds``, and with BadData when the data is
    shorter than the header says or inflates to more (a compression bomb: the excess is never inflated).
    """
    claimed = header.data_bytes
    if claimed is None:
        raise BadData("the header does not say how many voxels it holds (DimSize, ElementType)")
    if claimed > budget.scan_bytes:
        raise BudgetExceeded(
            f"its {claimed} bytes of voxel data are over the scan budget of {budget.scan_bytes} bytes per file"
        )
    deadline = time.monotonic() + budget.seconds
    offset = header.header_length if header.local else 0
    produced = 0
    with open(data_path, "rb") as handle:
        handle.seek(offset)
        if not header.compressed:
            while produced < claimed:
                chunk = handle.read(min(_INFLATE_CHUNK, claimed - produced))
                if not chunk:
                    raise BadData(f"the voxel data ends after {produced} of the header's {claimed} bytes")
                produced += len(chunk)
                yield chunk
                _on_time(deadline, budget, produced, claimed)
            return
        inflater = zlib.decompressobj()
        pending = b""
        while True:
            if not pending:
                if inflater.eof:
                    break
                pending = handle.read(_READ_CHUNK)
                if not pending:
                    break
            # At most one byte beyond the claim is inflated: enough to know the stream is longer than the header says.
            room = min(_INFLATE_CHUNK, claimed - produced + 1)
            try:
                chunk = inflater.decompress(pending, room)
            except zlib.error as exc:
                raise BadData(f"the compressed voxel data is corrupt ({exc})") from None
            pending = inflater.unconsumed_tail
            produced += len(chunk)
            if produced > claimed:
                raise BadData(
                    f"the compressed voxel data inflates to more than the header's {claimed} bytes (a compression "
                    "bomb, or a header that does not belong to the data); it was not inflated further"
                )
            if chunk:
                yield chunk
            _on_time(deadline, budget, produced, claimed)
        if produced < claimed:
            raise BadData(f"the compressed voxel data inflates to {produced} of the header's {claimed} bytes")


def _on_time(deadline: float, budget: ReadBudget, produced: int, claimed: int) -> None:
    if time.monotonic() > deadline:
        raise BudgetExceeded(
            f"scanning its voxels took over the time budget of {budget.seconds:g} s per file "
            f"({produced} of {claimed} bytes read)"
        )


def data_path(header_path: str, header: MetaHeader) -> str:
    """The file holding the voxels: the header file itself (LOCAL) or the data file next to it."""
    return header_path if header.local else os.path.join(os.path.dirname(header_path), header.data_file)

"""Hostile image files, made for real at test time: compression bombs and MetaImage headers that lie."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

_BLOCK = 1024**2  # zeros per deflate block


def _adler32_of_zeros(count: int) -> int:
    # Adler-32 over zeros: a stays 1, b grows by 1 per byte (RFC 1950 §8.2), so no need to feed 16 GiB through zlib.
    return ((count % 65521) << 16) | 1


def zlib_bomb(inflated: int) -> bytes:
    """A valid zlib stream that inflates to ``inflated`` zero bytes (a multiple of 1 MiB), built in well under a
    second: after a full flush, deflate's state is reset, so every further 1 MiB block of zeros compresses to the
    same bytes, which are repeated; the trailer's checksum is computed directly."""
    if inflated % _BLOCK:
        raise ValueError("inflated must be a multiple of 1 MiB")
    zeros = bytes(_BLOCK)
    compressor = zlib.compressobj(9)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert block == again, "deflate did not repeat itself after a full flush"
    end = compressor.flush()[:-4]  # the final empty block, without the (wrong) checksum of 3 blocks
    blocks = inflated // _BLOCK
    return first + block * (blocks - 1) + end + struct.pack(">I", _adler32_of_zeros(inflated))


def metaimage_header(dims: str, *, element_type: str = "MET_UCHAR", compressed: bool = False, **more: str) -> bytes:
    """A MetaImage header as SimpleITK writes one, with the given DimSize (text, so it may lie or be negative)."""
    ndims = len(dims.split())
    lines = [
        "ObjectType = Image",
        f"NDims = {ndims}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {compressed}",
        f"DimSize = {dims}",
        f"ElementSpacing = {' '.join(['1'] * ndims)}",
        f"ElementType = {element_type}",
        *(f"{key} = {value}" for key, value in more.items() if key != "ElementDataFile"),
        f"ElementDataFile = {more.get('ElementDataFile', 'LOCAL')}",
    ]
    return ("\n".join(lines) + "\n").encode()


def write_bomb_mha(path: Path, dims: str, inflated: int) -> Path:
    """An .mha whose compressed voxel data inflates to ``inflated`` bytes, whatever ``dims`` claims."""
    data = zlib_bomb(inflated)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(metaimage_header(dims, compressed=True, CompressedDataSize=str(len(data))) + data)
    return path

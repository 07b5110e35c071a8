"""Image files that no pat-seg reader may crash or hang on, built byte by byte.

A PNG is the 8-byte signature and chunks of (length, type, data, CRC-32 of type and data); IHDR holds
width, height, bit depth, colour type and three zero methods; IDAT the zlib stream of the rows, each a
filter byte and the row's bytes (PNG specification, ISO/IEC 15948, sections 5 and 11). Each file
below has valid chunks and CRCs, so only what it claims is hostile.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"
GREY, RGB = 0, 2  # IHDR colour types
BOMB_SIDE = 20000
HUGE_SIDE = 2**31 - 1  # the largest width and height a PNG header may hold
PILLOW_LIMIT = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS: 2**30 // 4 // 3


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes, bit_depth: int = 8, colour_type: int = GREY) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def truncated_data_png(width: int, height: int) -> bytes:
    """An 8-bit grey ``width x height`` PNG whose stream holds one row of the ``height`` due (68 bytes
    at 16x12): libpng fails with "Not enough image data" while reading rows."""
    return png(width, height, zlib.compress(bytes(1 + width)))


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A ``side x side`` 1-bit grey PNG of zeros: about 50 KB at 20000x20000 that decode to 400 million
    pixels (1.2 GB as RGB bytes)."""
    row = bytes(1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    rows_per_block = 1000
    stream = [compressor.compress(row * rows_per_block) for _ in range(side // rows_per_block)]
    stream.append(compressor.compress(row * (side % rows_per_block)))
    return png(side, side, b"".join(stream) + compressor.flush(), bit_depth=1)


def huge_header_png() -> bytes:
    """A header claiming the largest size a PNG may have, and four bytes of data."""
    return png(HUGE_SIDE, HUGE_SIDE, zlib.compress(bytes(4)))


def hostile_files(width: int, height: int) -> dict[str, bytes]:
    """Each hostile file by name; the truncated one claims ``width x height`` (a data set's size)."""
    return {
        "truncated data": truncated_data_png(width, height),
        "bomb": bomb_png(),
        "huge header": huge_header_png(),
        "empty": b"",
        "text": b"not an image\n",
    }


HOSTILE = ("truncated data", "bomb", "huge header", "empty", "text")


def expected_error(name: str, path: Path, height: int, kind: str = "image") -> str:
    """What the error about hostile file ``name`` at ``path`` must say (``height``: the truncated file's;
    ``kind``: "image", "label image"). The truncated file's stream holds its first row only."""
    if name == "truncated data":
        return f"cannot read {kind} {path}: too little image data (row {height} of {height} is missing)"
    if name == "bomb":
        return (
            f"{kind} {path} is {BOMB_SIDE}x{BOMB_SIDE} ({BOMB_SIDE**2:,} pixels), more than the "
            f"{PILLOW_LIMIT:,} pixels an image may have; to read it, set PAT_SEG_MAX_IMAGE_PIXELS"
        )
    if name == "huge header":
        return f"{kind} {path} is {HUGE_SIDE}x{HUGE_SIDE} ({HUGE_SIDE**2:,} pixels), more than the {PILLOW_LIMIT:,}"
    return f"cannot read {kind} {path}: cannot identify image file"

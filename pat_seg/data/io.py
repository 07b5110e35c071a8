"""Reading data-set files with errors that name the file: images, label images, layouts, MATLAB files.

Every reader here raises an error that names the offending path and what was expected, so a user
with a half-copied data set learns which file to fix instead of seeing a stack trace from a worker.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pat_seg.exceptions import ConfigurationError

try:  # deprecated since torchvision 0.29 (for TorchCodec); without it, PIL decodes every image
    from torchvision.io import ImageReadMode, decode_image, read_file
except ImportError:  # pragma: no cover - a torchvision that has dropped its image decoders
    decode_image = None


class DatasetLayoutError(FileNotFoundError, ConfigurationError):
    """A data-set root is missing or incomplete (a ``FileNotFoundError`` and a ``ValueError``)."""


# Marks a raw label value that an int64 label table does not accept.
INVALID = np.iinfo(np.int64).min
# The pixel limit of image files (max_image_pixels): the environment variable, and Pillow's default
# (Image.MAX_IMAGE_PIXELS, 89,478,485: 268 MB as uint8 RGB), 43 times a 2048x1024 Cityscapes image.
MAX_PIXELS_VARIABLE = "PAT_SEG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
# What Pillow raises on a malformed file, by the decoders' own code: an unidentified or truncated file
# (OSError), a broken chunk (SyntaxError), a field out of range or an oversized text chunk (ValueError),
# data that ends early (EOFError), a short header field (struct.error), a corrupt stream (zlib.error),
# and an allocation a raised limit cannot meet (MemoryError).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, MemoryError)
# What image memory holds before a PNG is decoded into it (decoded): a last row that still holds the
# first value only was not reached, unless it is the image's own, which the second value tells apart.
# Values a label map or a photo rarely fills a whole row with; bilevel images hold only 0 and 255.
UNWRITTEN = (165, 90)
UNWRITTEN_BILEVEL = (255, 0)


def require_paths(paths: Iterable[Path], layout: str) -> None:
    """Raise :class:`DatasetLayoutError` naming the first of ``paths`` that does not exist.

    ``layout`` describes the expected tree; it is repeated in the message so the user can compare.
    """
    for path in paths:
        if not path.exists():
            raise DatasetLayoutError(f"{path} does not exist; expected this layout:\n{layout}")


def max_image_pixels() -> int:
    """The most pixels an image file may have: ``PAT_SEG_MAX_IMAGE_PIXELS``, else Pillow's default limit.

    A header is cheap to forge: a 48 KB PNG can claim 20000x20000 pixels, 1.2 GB decoded (4.8 GB as
    the float image a loader makes of it). Every image and label image is checked against this limit
    from its header, before anything is decoded (:func:`opened_image`).
    """
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigurationError(
            f"{MAX_PIXELS_VARIABLE}={text!r}: expected a whole number of pixels >= 1, the largest image "
            f"to read (default {DEFAULT_MAX_PIXELS})"
        )
    return limit


@contextmanager
def opened_image(path: Path, kind: str = "image") -> Iterator[Image.Image]:
    """The image file at ``path`` opened by Pillow, its header read and its size within
    :func:`max_image_pixels`; nothing decoded yet.

    Whatever Pillow raises inside the block on a malformed file (too little image data, a broken
    chunk, a file that is no image) becomes a :class:`ConfigurationError` naming the file, as does an
    image over the limit. ``kind`` names the file in messages (``"image"``, ``"label image"``).
    """
    limit = max_image_pixels()
    try:
        with _open(path) as image:
            if image.width * image.height > limit:
                raise ConfigurationError(
                    f"{kind} {path} is {image.width}x{image.height} ({image.width * image.height:,} pixels), more "
                    f"than the {limit:,} pixels an image may have; to read it, set {MAX_PIXELS_VARIABLE} to a "
                    "larger number of pixels"
                )
            yield image
    except ConfigurationError:
        raise
    except DECODE_ERRORS as error:
        raise ConfigurationError(f"cannot read {kind} {path}: {error}") from error


def _open(path: Path) -> Image.Image:
    """``Image.open(path)`` with Pillow's own pixel guard off while the header is read: its callers
    check :func:`max_image_pixels` instead, with the file's size and the variable that raises the
    limit (Pillow's message names neither, and refuses past twice its own limit whatever is set)."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def decoded(image: Image.Image, path: Path) -> Image.Image:
    """``image``, opened from ``path`` by :func:`opened_image`, decoded whole (the same image or, rarely,
    the file decoded again).

    A PNG whose image data ends before its last row is an ``OSError``: libpng stops with "Not enough
    image data", but Pillow's zip decoder stops where the compressed stream ends and leaves the rows it
    did not reach as they were. So the image memory is filled with a value before decoding, and a last
    row that still holds only that value was not reached -- unless the image's own last row holds it,
    which a second decoding over another value tells apart.
    """
    row = _last_decoded_row(image)
    if row is None:
        image.load()
        return image
    first, second = UNWRITTEN_BILEVEL if image.mode == "1" else UNWRITTEN
    if _writes_row(image, row, first):
        return image
    again = _open(path)
    try:
        if _writes_row(again, row, second):
            return again
    except BaseException:
        again.close()
        raise
    again.close()
    raise OSError(f"too little image data (row {row + 1} of {image.height} is missing)")


def _last_decoded_row(image: Image.Image) -> int | None:
    """The row a PNG decoder writes last: the last row, or of an interlaced PNG the last odd row (the
    seventh pass's); None where not checked (other formats, animated PNGs, a one-row interlaced PNG)."""
    if image.format != "PNG" or getattr(image, "is_animated", False):
        return None
    if not image.info.get("interlace"):
        return image.height - 1
    return image.height - 1 - image.height % 2 if image.height > 1 else None


def _writes_row(image: Image.Image, row: int, fill: int) -> bool:
    """Decode ``image`` into memory filled with ``fill``; whether row ``row`` then holds any other value."""
    bands = len(image.getbands())
    image.im = Image.new(image.mode, image.size, fill if bands == 1 else (fill,) * bands).im
    image.load()  # decodes into the memory set above (ImageFile.load_prepare keeps an existing one)
    extrema = image.crop((0, row, image.width, row + 1)).getextrema()
    return any(bounds != (fill, fill) for bounds in (extrema if bands > 1 else [extrema]))


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of the image at ``path`` from its header (nothing decoded; a file that is no
    image, or one over the pixel limit, is an error naming it)."""
    with opened_image(path) as image:
        return image.height, image.width


def read_rgb(path: Path) -> Tensor:
    """The image at ``path`` as ``uint8 [3, H, W]`` (grey, palette, alpha and CMYK files converted to RGB).

    Any file may be malformed: a broken file is a :class:`ConfigurationError` naming it, never a
    crash (:func:`opened_image`, :func:`decoded`). JPEGs are decoded by ``torchvision.io``
    (libjpeg-turbo, which reports a broken file as an error), in 45% less CPU time than Pillow on a
    2048x1024 JPEG (docs/benchmarks.md, "Decoding"); every other format by Pillow. torchvision's PNG
    decoder is not used: a libpng error past the header (too little image data) crashes the process.
    """
    with opened_image(path) as image:
        if image.format in ("JPEG", "MPO") and decode_image is not None:
            try:
                return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
            except RuntimeError:  # a JPEG libjpeg-turbo does not convert to RGB (CMYK): Pillow does, or says why not
                pass
        whole = decoded(image, path)
        rgb = whole if whole.mode == "RGB" else whole.convert("RGB")
        # np.array copies: torch refuses the read-only buffer Pillow would share.
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)


def read_label_image(path: Path) -> np.ndarray:
    """The label image at ``path`` as ``[H, W]`` raw pixel values in the file's own dtype (uint8 for
    8-bit PNGs), palettes not applied; :class:`LabelTable` maps them to classes.

    Label PNGs are single-channel (mode L, P or I); a colour PNG is a colour rendering of a label
    map, not the label map, and is refused. A malformed file is an error naming it (:func:`opened_image`).
    """
    with opened_image(path, "label image") as image:
        if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise ConfigurationError(f"label image {path} has mode {image.mode}; expected a single-channel PNG")
        return np.asarray(decoded(image, path))


@dataclass(frozen=True)
class LabelTable:
    """Maps raw label values to class indices by a fixed table; a value it does not list is an error.

    ``table[v - low]`` is the class of raw value ``v`` for ``low <= v < low + len(table) - 1``; the
    last entry, and every entry of a value that is not a label of the data set, holds ``invalid``.
    ``expected`` describes the allowed values for the error message. The table's dtype is that of the
    mapped label maps: ``uint8`` when every class index and ignore value fits (the usual case), so a
    2048x1024 map is 2 MiB instead of 16 MiB as ``int64`` and an 8-bit label PNG is mapped by one
    lookup per pixel; otherwise ``int64``.
    """

    table: np.ndarray
    low: int
    expected: str
    invalid: int

    @classmethod
    def from_mapping(cls, mapping: dict[int, int], low: int, high: int, expected: str) -> LabelTable:
        """The table of ``mapping`` (raw value -> class) for raw values ``low..high``."""
        values = set(mapping.values())
        unused = sorted(set(range(256)) - values)
        if all(0 <= v <= 255 for v in values) and unused:
            dtype, invalid = np.uint8, unused[0]  # a uint8 value no raw value maps to marks the refused ones
        else:
            dtype, invalid = np.int64, INVALID
        table = np.full(high - low + 2, invalid, dtype=dtype)  # + 1: the slot of values outside low..high
        for raw, mapped in mapping.items():
            table[raw - low] = mapped
        return cls(table, low, expected, int(invalid))

    def __call__(self, raw: np.ndarray, source: str) -> np.ndarray:
        """Mapped labels of ``raw``, in the table's dtype; ``ValueError`` naming ``source`` and the first refused value."""
        outside = len(self.table) - 1
        if raw.dtype == np.uint8 and self.low == 0 and outside >= 256:
            mapped = np.take(self.table, raw)  # every uint8 value indexes the table: no bounds to check
        else:
            index = raw.astype(np.int64) - self.low
            index[(index < 0) | (index >= outside)] = outside
            mapped = np.take(self.table, index)
        bad = mapped == self.invalid
        if bad.any():
            raise ConfigurationError(f"label {int(raw[bad].flat[0])} found in {source}; {self.expected}")
        return mapped


def check_same_size(
    image_size: tuple[int, ...], label_size: tuple[int, ...], image_source: str, label_source: str
) -> None:
    """Image and label ``(height, width)`` must be equal: they cover the same pixels."""
    if tuple(image_size) != tuple(label_size):
        raise ConfigurationError(
            f"image {image_source} is {image_size[0]}x{image_size[1]} but its label {label_source} is "
            f"{label_size[0]}x{label_size[1]} (HxW); they must match"
        )


# --- MATLAB files ------------------------------------------------------------------------------------
# The NYUv2 meta files (splits.mat, classMapping40.mat) are MATLAB level-5 files; the labelled data set
# itself is v7.3 (HDF5). This small reader covers the numeric matrices of level-5 files, which is all
# the package needs, so SciPy is not a dependency. Format: MathWorks, "MAT-File Format", R2024a, ch. 1.
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_NUMERIC_CLASSES = set(range(6, 16))  # mxDOUBLE_CLASS .. mxUINT64_CLASS
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _elements(data: bytes, endian: str) -> Iterable[tuple[int, bytes]]:
    """(type, payload) of each data element in ``data``, small (packed) elements included."""
    pos = 0
    while pos + 8 <= len(data):
        word, nbytes = struct.unpack_from(endian + "II", data, pos)
        if word >> 16:  # small data element: size in the upper half, payload in the next 4 bytes
            yield word & 0xFFFF, data[pos + 4 : pos + 4 + (word >> 16)]
            pos += 8
            continue
        yield word, data[pos + 8 : pos + 8 + nbytes]
        pos += 8 + nbytes + (-nbytes % 8 if word != _MI_COMPRESSED else 0)


def _matrix(payload: bytes, endian: str) -> tuple[str, np.ndarray] | None:
    parts = list(_elements(payload, endian))
    flags = struct.unpack_from(endian + "I", parts[0][1])[0]
    if (flags & 0xFF) not in _NUMERIC_CLASSES:  # cell arrays, structs, chars: not needed here
        return None
    dims = np.frombuffer(parts[1][1], dtype=endian + _MI_DTYPES[parts[1][0]])
    name = parts[2][1].decode("ascii")
    values = np.frombuffer(parts[3][1], dtype=endian + _MI_DTYPES[parts[3][0]])
    return name, values.reshape(tuple(int(d) for d in dims), order="F")  # MATLAB is column-major


def read_mat(path: Path) -> dict[str, np.ndarray]:
    """The numeric matrices of a MATLAB file, by name; level-5 files here, v7.3 (HDF5) through h5py.

    Matrices keep MATLAB's shape (a 795x1 index vector stays ``[795, 1]``); non-numeric variables
    (cells, structs, strings) are skipped.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read MATLAB file {path}: {error}") from error
    if HDF5_SIGNATURE in data[:1024]:  # v7.3: HDF5 after a 512-byte user block
        import h5py

        with h5py.File(path, "r") as file:
            # HDF5 stores MATLAB arrays transposed; .T restores MATLAB's shape.
            return {
                k: np.asarray(v).T for k, v in file.items() if isinstance(v, h5py.Dataset) and v.dtype.kind in "iuf"
            }
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        raise ConfigurationError(f"{path} is not a MATLAB file (no level-5 header and no HDF5 signature)")
    endian = "<" if data[126:128] == b"IM" else ">"
    matrices: dict[str, np.ndarray] = {}
    try:
        for kind, payload in _elements(data[128:], endian):
            if kind == _MI_COMPRESSED:
                kind, payload = next(iter(_elements(zlib.decompress(payload), endian)))
            if kind == _MI_MATRIX and (matrix := _matrix(payload, endian)) is not None:
                matrices[matrix[0]] = matrix[1]
    except (struct.error, zlib.error, KeyError, IndexError, ValueError) as error:
        raise ConfigurationError(f"cannot parse MATLAB file {path}: {error}") from error
    return matrices

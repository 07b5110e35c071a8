"""Reading a folder data set's mask files as class maps: index masks and colour (RGB) masks.

Both readers map by a fixed table built from the configuration (class names, palette, void values),
never by the values an image happens to hold, and refuse a value they do not list with an error that
names the file, the value and what is allowed (docs/datasets.md, "Your own folder of images and masks").

- :class:`IndexMasks`: single-channel PNGs whose pixel values are class indices (mode L, I, or P read
  as its indices: :func:`~pat_seg.data.io.read_label_image` does not apply palettes), optionally with
  mmsegmentation's ``reduce_zero_label`` (0 is ignored, every other value ``v`` is class ``v - 1``).
- :class:`ColourMasks`: RGB PNGs whose colours are the classes of a palette (one colour per class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pat_seg.arguments import check_number
from pat_seg.data.io import LabelTable, opened_image, read_label_image, read_rgb
from pat_seg.exceptions import ConfigurationError

Colour = tuple[int, int, int]
COLOUR_MODES = ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV")


def colour_code(pixels: np.ndarray) -> np.ndarray:
    """``[..., 3]`` uint8 colours as one int32 per pixel, ``r * 65536 + g * 256 + b``."""
    pixels = pixels.astype(np.int32)
    return (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]


def check_colours(colours: Sequence[Sequence[int]], name: str) -> list[Colour]:
    """``colours`` as RGB triples of 0..255, or a :class:`ConfigurationError` naming the bad entry."""
    checked = []
    for entry in colours:
        values = list(entry)
        if len(values) != 3 or any(not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 255 for v in values):
            raise ConfigurationError(f"{name} entries must be [r, g, b] with integers in 0..255; got {entry!r}")
        checked.append((values[0], values[1], values[2]))
    return checked


def value_list(values: list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``"1..3, 7"``: the allowed values of an error message, short."""
    runs: list[list[int]] = []
    for value in sorted(set(values)):
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(f"{run[0]}..{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs)


@dataclass(frozen=True)
class IndexMasks:
    """Single-channel masks of class indices, mapped through ``table``; ``expected`` says what they may hold."""

    table: LabelTable

    @classmethod
    def build(
        cls, class_names: list[str], void_values: list[int], reduce_zero_label: bool, ignore_index: int
    ) -> IndexMasks:
        """The table of index masks: values ``0..len(class_names) - 1`` are the classes (``1..len(class_names)``
        with ``reduce_zero_label``, whose 0 is ignored, as mmsegmentation defines it); every value of
        ``void_values`` and the value ``ignore_index`` itself (the 255 of VOC-style masks) are ignored."""
        first, num_classes = (1 if reduce_zero_label else 0), len(class_names)
        mapping = {first + c: c for c in range(num_classes)}
        for position, value in enumerate(void_values):
            check_number(f"void_values[{position}]", value, at_least=0, integer=True, note="a mask value")
            if value in mapping:
                raise ConfigurationError(
                    f"void value {value} is the mask value of class {class_names[mapping[value]]!r}; void values must differ "
                    f"from the class values {value_list(list(mapping))}"
                    + (" (reduce_zero_label: class c is stored as c + 1)" if reduce_zero_label else "")
                )
        ignored = (
            set(void_values) | ({0} if reduce_zero_label else set()) | ({ignore_index} if ignore_index >= 0 else set())
        )
        mapping.update({value: ignore_index for value in ignored})
        expected = f"masks hold class values {value_list([first + c for c in range(num_classes)])}"
        expected += f" and ignored values {value_list(sorted(ignored))}" if ignored else " and no ignored value"
        if reduce_zero_label:
            expected += " (reduce_zero_label: 0 is ignored and value v is class v - 1)"
        return cls(LabelTable.from_mapping(mapping, min(mapping), max(mapping), expected))

    def __call__(self, path: Path) -> np.ndarray:
        """The class map of the mask at ``path``, in the table's dtype."""
        try:
            raw = read_label_image(path)
        except ConfigurationError:
            mode = _mode(path)
            if mode in COLOUR_MODES:  # the one refusal a setting fixes: say which
                raise ConfigurationError(
                    f"mask {path} is a colour image (mode {mode}); set mask_format: rgb with a palette "
                    "(one [r, g, b] per class) to read colour masks"
                ) from None
            raise
        return self.table(raw, str(path))


@dataclass(frozen=True)
class ColourMasks:
    """RGB masks whose colours are the classes of a palette; ``void_colours`` are ignored.

    A colour is looked up among the sorted colour codes (``codes``), and its position mapped to a class
    through ``table``; a colour that is neither a class's nor void is an error naming it.
    """

    codes: np.ndarray  # sorted colour codes (colour_code) of the classes and void colours
    table: LabelTable  # position in ``codes`` -> class (or ignore_index)
    expected: str

    @classmethod
    def build(
        cls, class_names: list[str], palette: list[Colour], void_colours: list[Colour], ignore_index: int
    ) -> ColourMasks:
        by_colour: dict[Colour, int] = {}
        for index, colour in enumerate(palette):
            if colour in by_colour:
                raise ConfigurationError(
                    f"palette colour {list(colour)} is given to both {class_names[by_colour[colour]]!r} and "
                    f"{class_names[index]!r}; each class needs a colour of its own"
                )
            by_colour[colour] = index
        for colour in void_colours:
            if colour in by_colour:
                raise ConfigurationError(
                    f"void colour {list(colour)} is the palette colour of {class_names[by_colour[colour]]!r}"
                )
            by_colour[colour] = ignore_index
        order = sorted(by_colour, key=lambda c: int(colour_code(np.array(c, dtype=np.uint8))))
        codes = colour_code(np.array(order, dtype=np.uint8))
        table = LabelTable.from_mapping(
            {position: by_colour[colour] for position, colour in enumerate(order)}, 0, len(order) - 1, ""
        )
        shown = ", ".join(f"{name} {list(colour)}" for name, colour in zip(class_names[:6], palette))
        more = f" and {len(palette) - 6} more" if len(palette) > 6 else ""
        void = f"; void colours {[list(c) for c in void_colours]}" if void_colours else "; no void colours"
        return cls(codes, table, f"masks hold the palette's colours ({shown}{more}){void}")

    def __call__(self, path: Path) -> np.ndarray:
        """The class map of the colour mask at ``path``, in the table's dtype."""
        codes = colour_code(read_rgb(path).permute(1, 2, 0).numpy())
        positions = np.searchsorted(self.codes, codes)
        positions[positions == len(self.codes)] = 0  # past the last code: no match, caught below
        unknown = self.codes[positions] != codes
        if unknown.any():
            code = int(codes[unknown].flat[0])
            colour = [code >> 16, (code >> 8) & 255, code & 255]
            raise ConfigurationError(f"colour {colour} found in mask {path}; {self.expected}")
        return self.table(positions, str(path))


def _mode(path: Path) -> str | None:
    """The PIL mode of the image at ``path`` (None when it cannot be opened, or is over the pixel limit)."""
    try:
        with opened_image(path, "mask") as image:
            return image.mode
    except ConfigurationError:
        return None

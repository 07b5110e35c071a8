"""The checks of the arguments a config reaches: one wording for every number and every choice.

A configured class declares what it accepts in its signature, where the ``pat-seg`` command reads it:
a string (or int) choice is a ``Literal`` alias, defined once beside the code that gives it meaning
(``Reduction`` in :mod:`pat_seg.losses.base`, ``OutputStride`` in :mod:`pat_seg.models.backbones`,
...), and a number with a range is one of the restricted number types below. jsonargparse then
refuses a value outside them while it parses, before anything is built, and ``--help`` shows them.

A Python caller passes no parser, so the constructor checks the same values again with
:func:`check_choice` (the choices read from the alias, never a second list of them) and
:func:`check_number`. Both raise :class:`~pat_seg.exceptions.ConfigurationError` (a ``ValueError``)
worded ``<name> must be <what was expected>; got <value>``, and return plain ``int``/``float`` values:
jsonargparse hands the constructor instances of its number types, which a YAML dump of the object
would not know.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar, get_args, overload

import yaml

from pat_seg.exceptions import ConfigurationError

if TYPE_CHECKING:
    # For a type checker the restricted types are the numbers they restrict.
    PositiveInt: TypeAlias = int
    NonNegativeInt: TypeAlias = int
    PositiveFloat: TypeAlias = float
    NonNegativeFloat: TypeAlias = float
    ClosedUnitInterval: TypeAlias = float
    OpenUnitInterval: TypeAlias = float
    HalfOpenUnitInterval: TypeAlias = float
else:
    from jsonargparse.typing import (
        ClosedUnitInterval,
        NonNegativeFloat,
        NonNegativeInt,
        OpenUnitInterval,
        PositiveFloat,
        PositiveInt,
        restricted_number_type,
    )

    # [0, 1): a decay or CB's effective-number b, where 1 would stop the running mean or weigh nothing.
    HalfOpenUnitInterval = restricted_number_type(
        "HalfOpenUnitInterval", float, [(">=", 0.0), ("<", 1.0)], docstring="float restricted to be ≥0 and <1"
    )

    # A parsed value keeps its restricted type in the config, and reaches classes that declare a plain
    # int or float: `--model.model my.Net` keeps the default U-Net's `in_channels` (a PositiveInt) for
    # my.Net's `in_channels: int`, and jsonargparse's YAML check of that value failed ("cannot
    # represent an object"). YAML writes every int and float subclass as the number it is, as
    # jsonargparse itself teaches the safe dumper its Namespace.
    yaml.SafeDumper.add_multi_representer(int, yaml.SafeDumper.represent_int)
    yaml.SafeDumper.add_multi_representer(float, yaml.SafeDumper.represent_float)

# Each restricted type's range as check_number takes it. The pat-seg command words the parser's refusal
# with it (pat_seg.cli.errors), so a value out of range reads the same from the parser and a constructor.
NUMBER_TYPE_BOUNDS: dict[str, dict[str, Any]] = {
    "PositiveInt": {"at_least": 1, "integer": True},
    "NonNegativeInt": {"at_least": 0, "integer": True},
    "PositiveFloat": {"above": 0},
    "NonNegativeFloat": {"at_least": 0},
    "ClosedUnitInterval": {"at_least": 0, "at_most": 1},
    "OpenUnitInterval": {"above": 0, "below": 1},
    "HalfOpenUnitInterval": {"at_least": 0, "below": 1},
}

__all__ = [
    "NUMBER_TYPE_BOUNDS",
    "ClosedUnitInterval",
    "HalfOpenUnitInterval",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OpenUnitInterval",
    "PositiveFloat",
    "PositiveInt",
    "check_choice",
    "check_number",
]

Choice = TypeVar("Choice")


def check_choice(name: str, value: Choice, choices: object) -> Choice:
    """``value`` when it is one of the values of the ``Literal`` alias ``choices``, else
    ``ConfigurationError``: ``<name> must be one of 'a', 'b'; got 'c'``."""
    allowed = get_args(choices)
    # `in` alone would take True for 1 and 1.0 for 1: the type must match as well.
    if not any(type(value) is type(option) and value == option for option in allowed):
        raise ConfigurationError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


@overload
def check_number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    integer: Literal[True],
    note: str = "",
) -> int: ...


@overload
def check_number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    integer: Literal[False] = False,
    note: str = "",
) -> float: ...


def check_number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    integer: bool = False,
    note: str = "",
) -> int | float:
    """``value`` as a plain ``int`` (``integer=True``) or ``float`` when it lies within the bounds given,
    else ``ConfigurationError`` worded ``<name> must be <a number> <bounds> (<note>); got <value>``.

    Bounds: ``above`` (exclusive) or ``at_least`` (inclusive) from below, ``below`` (exclusive) or
    ``at_most`` (inclusive) from above; none given: any finite number. A number is finite always
    (NaN and infinity are refused), an integer is an integral number (``3``, not ``3.0``), and a
    ``bool`` is neither.
    """
    if above is not None and at_least is not None or below is not None and at_most is not None:
        raise TypeError("check_number takes one lower bound (above or at_least) and one upper (below or at_most)")
    low, high = (above if above is not None else at_least), (below if below is not None else at_most)
    number: float | None = None  # stays None for what is not a number of the kind asked for
    flag = isinstance(value, bool)  # a bool is an Integral to Python, but a flag where a number belongs
    if integer and not flag and isinstance(value, numbers.Integral):
        number = int(value)
    elif not integer and not flag and isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float's range: refused as infinity is
            number = math.inf
        number = number if math.isfinite(number) else None
    if number is not None:
        within_low = low is None or (number > low if above is not None else number >= low)
        within_high = high is None or (number < high if below is not None else number <= high)
        if within_low and within_high:
            return number
    expected = expected_number(above=above, at_least=at_least, below=below, at_most=at_most, integer=integer, note=note)
    raise ConfigurationError(f"{name} must be {expected}; got {value!r}")


def expected_number(
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    integer: bool = False,
    note: str = "",
) -> str:
    """``an integer >= 1``, ``a finite number > 0``, ``a number in [0, 1)``: what :func:`check_number` asks for."""
    low, high = (above if above is not None else at_least), (below if below is not None else at_most)
    # An interval bounded on both sides holds finite numbers only: "finite" would say nothing there.
    noun = "an integer" if integer else "a number" if low is not None and high is not None else "a finite number"
    if low is not None and high is not None:
        bounds = f" in {'(' if above is not None else '['}{low:g}, {high:g}{')' if below is not None else ']'}"
    elif low is not None:
        bounds = f" {'>' if above is not None else '>='} {low:g}"
    elif high is not None:
        bounds = f" {'<' if below is not None else '<='} {high:g}"
    else:
        bounds = ""
    return noun + bounds + (f" ({note})" if note else "")

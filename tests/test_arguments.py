"""The argument checks (:mod:`pat_seg.arguments`): hand cases at every boundary, the one wording, and the
restricted number types the parser applies agreeing with the checks a Python caller gets."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
)
from test_run_safety import pat_seg, short_error

from pat_seg.arguments import HalfOpenUnitInterval, check_choice, check_number
from pat_seg.exceptions import ConfigurationError
from pat_seg.module import check_optimizer

TINY = 5e-324  # the smallest positive float: as close to a bound as a value can be


@pytest.mark.parametrize(
    ("bounds", "inside", "outside"),
    [
        ({"above": 0}, [TINY, 1.0, 1e308], [0, 0.0, -TINY, -1]),
        ({"at_least": 0}, [0, 0.0, -0.0, TINY, 7], [-TINY, -1]),
        ({"below": 1}, [1 - 2**-53, 0, -5], [1, 1.0, 2]),
        ({"at_most": 1}, [1, 1.0, -3], [1 + 2**-52, 2]),
        ({"at_least": 0, "below": 1}, [0, 0.5, 1 - 2**-53], [-TINY, 1, 1.0]),
        ({"above": 0, "below": 1}, [TINY, 0.5, 1 - 2**-53], [0, 0.0, 1, 1.0]),
        ({"at_least": 0, "at_most": 1}, [0, 1, 0.25], [-TINY, 1 + 2**-52]),
        ({}, [0, -1e308, 1e308], []),
    ],
)
def test_bounds_are_inclusive_or_exclusive_as_named(bounds: dict[str, float], inside: list, outside: list) -> None:
    for value in inside:
        assert check_number("x", value, **bounds) == value
    for value in outside:
        with pytest.raises(ConfigurationError, match="^x must be "):
            check_number("x", value, **bounds)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400, "1", None, True, False, [1], 1j])
def test_what_is_not_a_finite_number_is_refused_whatever_the_bounds(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"^x must be a finite number; got "):
        check_number("x", value)
    with pytest.raises(ConfigurationError, match=r"^x must be a number in \[0, 1\]; got "):
        check_number("x", value, at_least=0, at_most=1)


def test_an_integer_is_integral_and_comes_back_a_plain_int() -> None:
    assert check_number("n", 3, at_least=1, integer=True) == 3
    assert check_number("n", 10**400, at_least=1, integer=True) == 10**400  # an int has no float's range
    assert type(check_number("n", np.int64(3), at_least=1, integer=True)) is int
    assert type(check_number("n", PositiveInt(3), at_least=1, integer=True)) is int
    for value in (3.0, 2.5, True, "3", None):
        with pytest.raises(ConfigurationError, match=r"^n must be an integer >= 1; got "):
            check_number("n", value, at_least=1, integer=True)


def test_a_number_comes_back_a_plain_float() -> None:
    # jsonargparse hands a constructor instances of its restricted types, which a YAML dump would not know.
    for value in (2, np.float32(2.0), PositiveFloat(2.0)):
        result = check_number("t", value, above=0)
        assert type(result) is float and result == 2.0


@pytest.mark.parametrize(
    ("bounds", "value", "message"),
    [
        ({"above": 0}, -1, "temperature must be a finite number > 0; got -1"),
        ({"at_least": 0}, -0.5, "temperature must be a finite number >= 0; got -0.5"),
        ({"below": 2.5}, 3, "temperature must be a finite number < 2.5; got 3"),
        ({"at_most": 1e-3}, 1, "temperature must be a finite number <= 0.001; got 1"),
        ({"at_least": 0, "below": 1}, 1.0, "temperature must be a number in [0, 1); got 1.0"),
        ({"above": 0, "at_most": 1}, 0, "temperature must be a number in (0, 1]; got 0"),
        ({}, math.nan, "temperature must be a finite number; got nan"),
        ({"above": 0, "integer": True}, 0, "temperature must be an integer > 0; got 0"),
        ({"above": 0, "note": "Eq. 5's T"}, "20", "temperature must be a finite number > 0 (Eq. 5's T); got '20'"),
    ],
)
def test_every_message_names_the_value_and_what_was_expected(bounds: dict[str, Any], value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        check_number("temperature", value, **bounds)
    assert str(raised.value) == message


def test_two_bounds_on_one_side_are_a_programming_error() -> None:
    with pytest.raises(TypeError, match="one lower bound"):
        check_number("x", 1, above=0, at_least=0)
    with pytest.raises(TypeError, match="one upper"):
        check_number("x", 1, below=2, at_most=2)


Colour = Literal["red", "green"]
Stride = Literal[8, 16]


def test_a_choice_is_one_of_the_aliases_values_of_the_same_type() -> None:
    assert check_choice("colour", "red", Colour) == "red"
    assert check_choice("output_stride", 16, Stride) == 16
    with pytest.raises(ConfigurationError) as raised:
        check_choice("colour", "rde", Colour)
    assert str(raised.value) == "colour must be one of 'red', 'green'; got 'rde'"
    with pytest.raises(ConfigurationError) as raised:
        check_choice("output_stride", 32, Stride)
    assert str(raised.value) == "output_stride must be one of 8, 16; got 32"
    # 16.0 == 16 and "16" names it, but neither is the int the network's arithmetic needs.
    for wrong in (16.0, "16", None):
        with pytest.raises(ConfigurationError, match="output_stride must be one of 8, 16; got "):
            check_choice("output_stride", wrong, Stride)


# Each restricted type the signatures use, with the bounds its constructor's check_number call gives.
TYPES_AND_BOUNDS = [
    (PositiveInt, {"above": 0, "integer": True}),
    (NonNegativeInt, {"at_least": 0, "integer": True}),
    (PositiveFloat, {"above": 0}),
    (NonNegativeFloat, {"at_least": 0}),
    (ClosedUnitInterval, {"at_least": 0, "at_most": 1}),
    (OpenUnitInterval, {"above": 0, "below": 1}),
    (HalfOpenUnitInterval, {"at_least": 0, "below": 1}),
]


@pytest.mark.parametrize(("number_type", "bounds"), TYPES_AND_BOUNDS, ids=lambda x: getattr(x, "__name__", ""))
def test_the_parsers_types_refuse_what_the_checks_refuse(number_type: type, bounds: dict[str, Any]) -> None:
    # At and around each boundary of the unit interval (integers: around 0): the type the parser
    # applies and the check a Python caller gets agree on every value.
    values = [-1, -TINY, 0, TINY, 0.5, 1 - 2**-53, 1, 1 + 2**-52, 2] if not bounds.get("integer") else [-1, 0, 1, 2]
    for value in values:
        try:
            number_type(value)
            parsed = True
        except ValueError:
            parsed = False
        try:
            check_number("x", value, **bounds)
            checked = True
        except ConfigurationError:
            checked = False
        assert parsed == checked, (number_type.__name__, value, parsed, checked)


# --- through the console script: refused while parsing, before anything is built or written -------------


def refused(tmp_path: Path, *arguments: str) -> str:
    """``pat-seg fit <arguments>`` run in an empty folder: exit 2, a short message without a traceback,
    and the folder still empty (no run folder, no log)."""
    result = pat_seg("fit", *arguments, cwd=tmp_path)
    short_error(result)
    assert result.returncode == 2, result.stderr
    assert not any(tmp_path.iterdir()), sorted(tmp_path.rglob("*"))
    return result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--model.loss.init_args.reduction=meen"],
            "reduction of PATLoss must be one of 'mean', 'sum', 'none'; got 'meen'",
        ),
        (
            ["--model.loss.init_args.normalization=pixle"],
            "normalization of PATLoss must be one of 'image_class', 'pixel'; got 'pixle'",
        ),
        (
            ["--model.model=DeepLabV3", "--model.model.init_args.output_stride=10"],
            "output_stride of DeepLabV3 must be one of 8, 16; got 10",
        ),
        pytest.param(
            ["--model.lr_scheduler_interval=epoc"],
            "model.lr_scheduler_interval must be one of 'epoch', 'step'; got 'epoc'",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_mistyped_choice_is_refused_with_the_choices(tmp_path: Path, arguments: list[str], message: str) -> None:
    assert refused(tmp_path, *arguments).startswith(f"pat-seg fit: error: the command line: {message}\n")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model.loss.init_args.temperature=-1"], "temperature of PATLoss must be a finite number > 0; got -1"),
        pytest.param(
            ["--data.init_args.batch_size=0"],
            "batch_size of SyntheticLongTailDataModule must be an integer >= 1; got 0",
            marks=pytest.mark.slow,
        ),
        # Inside an Optional (None or the number) and inside a list.
        pytest.param(
            ["--model.loss=ClassBalancedLoss", "--model.loss.init_args.beta=1.5"],
            "beta of ClassBalancedLoss must be a number in [0, 1); got 1.5",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ["--model.loss=FocalLoss", "--model.loss.init_args.alpha=[1, -0.5]"],
            "alpha of FocalLoss must be a finite number >= 0; got -0.5",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_number_out_of_range_is_refused_by_name(tmp_path: Path, arguments: list[str], message: str) -> None:
    assert refused(tmp_path, *arguments).startswith(f"pat-seg fit: error: the command line: {message}\n")


@pytest.mark.slow
def test_a_refusal_in_a_config_file_names_its_line(tmp_path: Path) -> None:
    config = tmp_path / "guard.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n    - class_path: pat_seg.callbacks.NonFiniteLossGuard\n"
        "      init_args:\n        action: skp\n"
    )
    result = pat_seg("fit", "--config", str(config), cwd=tmp_path)
    short_error(result)
    assert result.stderr.startswith(
        f"pat-seg fit: error: {config} line 5: action of NonFiniteLossGuard must be one of 'stop', 'skip'; got 'skp'\n"
    ), result.stderr
    assert sorted(tmp_path.iterdir()) == [config]


def test_the_help_lists_the_choices_and_the_ranges() -> None:
    loss = pat_seg("fit", "--model.loss.help", "PATLoss")
    data = pat_seg("fit", "--data.help", "SyntheticLongTailDataModule")
    assert loss.returncode == 0 and data.returncode == 0, loss.stderr + data.stderr
    for shown in (
        "--model.loss.reduction {mean,sum,none}",
        "--model.loss.normalization {image_class,pixel}",
        "--model.loss.implementation {auto,eager,triton}",
        "--model.loss.weight_normalization {none,batch_minmax}",
    ):
        assert shown in loss.stdout, loss.stdout
    words = " ".join(loss.stdout.split())  # help wraps its lines
    assert "(type: PositiveFloat, default: 20.0)" in words and "(type: ClosedUnitInterval, default: 0.0)" in words
    assert "--data.rarity {small,infrequent,mixed}" in data.stdout, data.stdout
    assert "(type: PositiveInt, default: 16)" in " ".join(data.stdout.split()), data.stdout


def test_an_optimizer_argument_its_class_refuses_is_a_configuration_error() -> None:
    check_optimizer(partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(ConfigurationError, match=r"^optimizer: Invalid learning rate: -1.0$"):
        check_optimizer(partial(torch.optim.Adam, lr=-1.0))


def test_a_negative_learning_rate_is_refused_before_the_run_folder_exists(tmp_path: Path) -> None:
    message = refused(tmp_path, "--model.optimizer.lr=-1")
    # Refused when the module is built (after the seed is set), still before the run folder exists.
    assert "\npat-seg fit: error: optimizer: Invalid learning rate: -1.0\n" in message, message


def test_a_parsed_number_type_is_written_to_yaml_as_its_plain_number() -> None:
    # A value keeps its parser type in the config and may reach a user class that declares a plain
    # int (the default U-Net's in_channels under `--model.model my.Net`): YAML must write it as a number.
    import yaml

    values = {"channels": PositiveInt(3), "rate": PositiveFloat(0.5), "share": ClosedUnitInterval(1.0), "flag": True}
    assert yaml.safe_dump(values) == "channels: 3\nflag: true\nrate: 0.5\nshare: 1.0\n"
    assert yaml.safe_load(yaml.safe_dump(values)) == {"channels": 3, "rate": 0.5, "share": 1.0, "flag": True}

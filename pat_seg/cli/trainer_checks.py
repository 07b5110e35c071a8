"""The Trainer's numeric options checked before anything is built, each refusal naming its flag and source.

Lightning rejects some of these values deep inside ``Trainer.__init__`` (a long traceback) and others
only once training starts (``check_val_every_n_epoch=0`` divides by zero after the first epoch,
``accumulate_grad_batches=0`` when the first batch is accumulated). Every rule below is the range that
Lightning's ``Trainer`` documents for the option; :func:`check_trainer_options` raises a
:class:`~pat_seg.exceptions.ConfigurationError` for the first value outside it, naming where the value
was set (the command line, or a config file and line), before any data is read or any folder is made.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args, get_origin, get_type_hints

from lightning.pytorch import Trainer

from pat_seg.cli.errors import where_set
from pat_seg.exceptions import ConfigurationError

Rule = Callable[[Any], bool]


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_least(bound: int, optional: bool = True) -> Rule:
    """An integer >= ``bound`` (or None, where the option may be left unset)."""
    return lambda value: (optional and value is None) or (_integer(value) and value >= bound)


def batch_share(value: Any) -> bool:
    """``limit_*_batches`` / ``overfit_batches``: a share in [0.0, 1.0] or a whole number of batches >= 0."""
    if value is None:
        return True
    if _integer(value):
        return value >= 0
    return _number(value) and (0.0 <= value <= 1.0 or (value > 1.0 and float(value).is_integer()))


def check_interval(value: Any) -> bool:
    """``val_check_interval``: a share of the epoch in (0.0, 1.0], a number of batches >= 1, or a time
    (``"DD:HH:MM:SS"`` or a dict of ``timedelta`` arguments; Lightning parses those itself)."""
    if value is None or isinstance(value, (str, dict)):
        return True
    if _integer(value):
        return value >= 1
    return _number(value) and 0.0 < value <= 1.0


def device_count(value: Any) -> bool:
    """``devices``: a count >= 1, -1 (all), ``"auto"``, or device indices (a list, or ``"0,1"``)."""
    if isinstance(value, str):
        text = value.strip()
        if text == "auto":
            return True
        if "," in text:  # "0,1" or "1,": device indices
            indices = [part.strip() for part in text.split(",") if part.strip()]
            return bool(indices) and all(index.isdigit() for index in indices)
        return re.fullmatch(r"-?\d+", text) is not None and device_count(int(text))
    if isinstance(value, (list, tuple)):
        return len(value) > 0 and all(_integer(index) and index >= 0 for index in value)
    return _integer(value) and (value >= 1 or value == -1)


def _literals(annotation: Any) -> list[Any]:
    """Every value of the ``Literal`` types in an annotation (a union of them, optional or not), in order."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [value for argument in get_args(annotation) for value in _literals(argument)]


# The values Trainer's precision annotation lists (64, 32, 16, "bf16-mixed", ...), read from its signature.
PRECISIONS = _literals(get_type_hints(Trainer.__init__)["precision"])

# option: (rule, what it must be). Ranges from Lightning's Trainer documentation.
RULES: dict[str, tuple[Rule, str]] = {
    "max_epochs": (at_least(-1), "an integer >= 0, or -1 for no limit"),
    "min_epochs": (at_least(0), "an integer >= 0"),
    "max_steps": (at_least(-1, optional=False), "an integer >= 0, or -1 for no limit"),
    "min_steps": (at_least(0), "an integer >= 0"),
    "devices": (device_count, "a number of devices >= 1, -1 (all), 'auto', or device indices such as [0, 1]"),
    "num_nodes": (at_least(1, optional=False), "an integer >= 1"),
    "precision": (
        lambda value: value is None or value in PRECISIONS,
        "one of " + ", ".join(dict.fromkeys(map(str, PRECISIONS))),
    ),
    "val_check_interval": (check_interval, "a share of an epoch in (0.0, 1.0], a number of batches >= 1, or a time"),
    "check_val_every_n_epoch": (at_least(1), "an integer >= 1 (or null: validate by val_check_interval only)"),
    "accumulate_grad_batches": (at_least(1, optional=False), "an integer >= 1"),
    "log_every_n_steps": (at_least(0), "an integer >= 0"),
    "num_sanity_val_steps": (at_least(-1), "an integer >= 0, or -1 for the whole validation set"),
    "gradient_clip_val": (lambda value: value is None or (_number(value) and value >= 0), "a number >= 0"),
    "reload_dataloaders_every_n_epochs": (at_least(0, optional=False), "an integer >= 0"),
    **{
        f"limit_{split}_batches": (batch_share, "a share in [0.0, 1.0] or a whole number of batches >= 0")
        for split in ("train", "val", "test", "predict")
    },
    "overfit_batches": (batch_share, "a share in [0.0, 1.0] or a whole number of batches >= 0"),
}


def check_trainer_options(trainer: Mapping[str, Any], argv: list[str], defaults: Sequence[str] = ()) -> None:
    """Refuse the first trainer option outside its range (:data:`RULES`), naming the flag, the value, where
    it was set (``argv``'s flags and ``--config`` files, then the ``defaults`` config files) and what it must be."""
    for option, (rule, expected) in RULES.items():
        if option not in trainer:
            continue
        value = trainer[option]
        if not rule(value):
            flag = f"trainer.{option}"
            # The value as it is typed on a command line (a string without quotes: devices=0 reads as either).
            raise ConfigurationError(f"--{flag}={value} ({where_set(flag, argv, defaults)}): must be {expected}")


_PARSED_TRAINER_KEY = re.compile(r'Parser key "trainer\.(?P<option>\w+)"')


def explain_trainer_parse_error(
    message: str, argv: list[str], defaults: Sequence[str] = ()
) -> ConfigurationError | None:
    """A parse error of a trainer option that :data:`RULES` knows (``precision=17`` fits none of the
    types the option takes), in the words of :func:`check_trainer_options`; None for any other error."""
    found = _PARSED_TRAINER_KEY.search(message)
    if found is None or found["option"] not in RULES:
        return None
    option = found["option"]
    flag = f"trainer.{option}"
    given = next(
        (
            argument.split("=", 1)[1] if "=" in argument else argv[index + 1]
            for index, argument in enumerate(argv)
            if argument.startswith(f"--{flag}=") or (argument == f"--{flag}" and index + 1 < len(argv))
        ),
        None,
    )
    shown = f"--{flag}={given}" if given is not None else f"--{flag}"
    return ConfigurationError(f"{shown} ({where_set(flag, argv, defaults)}): must be {RULES[option][1]}")

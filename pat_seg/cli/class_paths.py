"""A configured class that cannot be built, explained in a few lines: ``--model.loss mymod.MyLoss``
whose module does not import, a mistyped ``--model.loss PATLos``, an abstract base such as
``--data DiskDataModule``.

jsonargparse reports each as the list of every type it tried (twice over for a union type). This says
what was given, why it names no class to build (the module's own import error, a missing name, an
abstract base) and the nearest classes to give instead.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from pathlib import Path

from pat_seg.exceptions import ConfigurationError

_KEY = re.compile(r'Parser key "(?P<key>[\w.]+)"')
# "--data X" / "data: X" (a class path, a class name or a config file) and "class_path: X" in a file.
_GIVEN = re.compile(r"Expected a path but (?P<value>\S+) either not accessible or invalid")
_CLASS_PATH = re.compile(r"class_path '(?P<value>[^']+)'")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
# What the classes of each key are called in a message.
KINDS = {"model.loss": "losses", "model.model": "networks", "data": "data modules"}
IMPORTABLE = (
    "a class of your own must be importable: put the folder that holds its module on PYTHONPATH "
    "(PYTHONPATH=/path/to/folder pat-seg ...; the current folder is not searched) or install its package"
)


def own_choices(key: str) -> list[type]:
    """pat-seg's classes to give as ``key`` (its losses, networks or data modules), in the paper's order."""
    if key == "model.loss":
        from pat_seg.losses import BEYOND_PAPER_LOSSES, PAPER_LOSSES

        return [*PAPER_LOSSES, *BEYOND_PAPER_LOSSES]
    if key == "model.model":
        from pat_seg.models import PAPER_MODELS

        return list(PAPER_MODELS)
    if key == "data":
        import pat_seg.data
        from pat_seg.data.base import SegmentationDataModule

        exported = (getattr(pat_seg.data, name) for name in pat_seg.data.__all__)
        return [
            cls
            for cls in exported
            if inspect.isclass(cls) and issubclass(cls, SegmentationDataModule) and not inspect.isabstract(cls)
        ]
    return []


def explain_class_path(text: str) -> ConfigurationError | None:
    """The error for a jsonargparse message ``text`` about a value that names no class to build; None
    when ``text`` is about something else (then it is a class, and its arguments are the problem)."""
    key_match, given = _KEY.search(text), _GIVEN.search(text) or _CLASS_PATH.search(text)
    if key_match is None or given is None:
        return None
    key, value = key_match["key"], given["value"]
    choices = own_choices(key)
    if value.endswith(CONFIG_SUFFIXES) or "/" in value:
        if Path(value).exists():
            return None  # a config file that is there: what it holds is the problem
        return ConfigurationError(f"{key}: {value} is neither a config file (no such file) nor a class path")
    problem = _why_no_class(value, choices, abstract="is abstract" in text)
    if problem is None:
        return None
    lines = [f"{key}: {value!r} {problem}"]
    if choices:
        names = ", ".join(cls.__name__ for cls in choices)
        lines.append(f"pat-seg's {KINDS[key]}, by name: {names}; or any importable class path (module.Class)")
    return ConfigurationError("\n".join(lines))


def _why_no_class(value: str, choices: list[type], abstract: bool) -> str | None:
    """Why ``value`` names no class to build, with the nearest names; None when it names one."""
    module_name, _, name = value.rpartition(".")
    if not module_name:  # a class name: one of the known subclasses, or nothing
        if abstract:
            return "is an abstract base class (code its subclasses share), not one to build"
        return "names no known class" + (_nearest(name, choices) if choices else "; give its class path (module.Class)")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the module's own failure, whatever it raised, is the explanation
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"names no class: module {module_name} does not import ({reason})\n{IMPORTABLE}"
    found = getattr(module, name, None)
    if not inspect.isclass(found):
        in_module = [cls for cls in vars(module).values() if inspect.isclass(cls) and cls.__module__ == module.__name__]
        what = "no class" if found is None else f"a {type(found).__name__}, not a class,"
        nearest = _nearest(name, in_module, f"{module_name}.") or _nearest(name, choices)
        return f"names no class: module {module_name} has {what} named {name}{nearest}"
    if inspect.isabstract(found):
        return "is an abstract base class (code its subclasses share), not one to build"
    return None


def _nearest(name: str, candidates: list[type], prefix: str = "") -> str:
    """``; did you mean X?`` for the candidates' class names closest to ``name``, each after ``prefix``
    (nothing when none is close)."""
    close = difflib.get_close_matches(name, [cls.__name__ for cls in candidates], n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(prefix + match for match in close)}?" if close else ""

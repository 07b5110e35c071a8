"""What a run's network, loss and data module are called, read from the classes its config names.

A config names each by class path (``pat_seg.losses.PATLoss``, ``mymod.FocalLoss``). The report's
labels, the HParams row and a run's identity ask the class itself, never a list of names: a loss's
``description`` (:class:`~pat_seg.losses.description.LossDescription`: its label, the arguments the
label shows, which arguments identify a run), a network's or data module's ``label``. A class that
declares none is known by its class name, written with its module when one of pat-seg's classes has
that name (or that label), so a class of the user's own is never taken for one of ours; nor does a
user's subclass of a pat-seg class inherit the pat-seg class's label.

A data module that reads whichever data set it is pointed at (a folder of the user's own) names the
data set from the run's arguments instead (:func:`data_set_name`).

The class is imported from its path, as the run that trained with it imported it, and is never
instantiated. A path that does not import (a user's module off the ``PYTHONPATH``) still names its run,
by the same rule: the class name it ends in, the whole path where pat-seg has a class of that name.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from collections.abc import Mapping
from typing import Any, Literal

from pat_seg.losses.description import FROM_THE_DATA, LossDescription
from pat_seg.table_text import table_text_problem

Kind = Literal["loss", "model", "data"]
KINDS: tuple[Kind, ...] = ("loss", "model", "data")
OWN_PACKAGE = "pat_seg"
# The package whose exported classes are pat-seg's own of each kind.
PACKAGES: dict[Kind, str] = {"loss": "pat_seg.losses", "model": "pat_seg.models", "data": "pat_seg.data"}
_RESOLVED: dict[str, type] = {}  # class path -> the class it imported as


def resolve(class_path: str) -> type | None:
    """The class at ``class_path`` (``module.Name``), imported; None when it does not import or is no class.

    Classes found are remembered; a path that failed is tried again next time (a notebook may have put
    its module on the path since)."""
    if class_path in _RESOLVED:
        return _RESOLVED[class_path]
    module, _, name = class_path.rpartition(".")
    if not module:
        return None
    try:
        found = getattr(importlib.import_module(module), name, None)
    except Exception:  # a user's module that is gone or fails: its runs are still reported, by name
        return None
    if not inspect.isclass(found):
        return None
    _RESOLVED[class_path] = found
    return found


def canonical(class_path: str) -> str:
    """``module.Name`` where the class is defined (one spelling per class); the path itself when it does not import."""
    found = resolve(class_path)
    return class_path if found is None else f"{found.__module__}.{found.__qualname__}"


def is_ours(cls: type) -> bool:
    return cls.__module__ == OWN_PACKAGE or cls.__module__.startswith(f"{OWN_PACKAGE}.")


@functools.cache
def own_classes(kind: Kind) -> tuple[type, ...]:
    """pat-seg's exported classes of ``kind`` (those of its losses, networks or data modules package)."""
    package = importlib.import_module(PACKAGES[kind])
    return tuple(found for name in package.__all__ if inspect.isclass(found := getattr(package, name)))


def declared(cls: type, attribute: str) -> Any:
    """``cls.attribute`` as ``cls`` or a base class declares it; None when none does, or when the declaring
    class is pat-seg's and ``cls`` is not (a user's subclass of ``UNet`` is not the paper's U-Net)."""
    for klass in cls.__mro__:
        if attribute in vars(klass):
            return None if is_ours(klass) and not is_ours(cls) else vars(klass)[attribute]
    return None


def class_name(class_path: str) -> str:
    """The class's name, or its canonical path when it is not pat-seg's and a class of pat-seg's has that name."""
    name = class_path.rpartition(".")[2]
    found = resolve(class_path)
    if found is not None and is_ours(found):
        return name
    return canonical(class_path) if name in _own_names() and "." in class_path else name


@functools.cache
def _own_names() -> frozenset[str]:
    return frozenset(cls.__name__ for kind in KINDS for cls in own_classes(kind))


def described(class_path: str) -> LossDescription | None:
    """The ``description`` the class declares (:func:`declared`), None when it declares none."""
    found = resolve(class_path)
    description = declared(found, "description") if found is not None else None
    return description if isinstance(description, LossDescription) else None


@functools.cache
def own_labels(kind: Kind) -> frozenset[str]:
    """The labels pat-seg's own classes of ``kind`` declare."""
    return frozenset(label for cls in own_classes(kind) if (label := _declared_label(cls, kind)) is not None)


def _declared_label(cls: type, kind: Kind) -> str | None:
    if kind == "loss":
        description = declared(cls, "description")
        return description.label if isinstance(description, LossDescription) else None
    label = declared(cls, "label")
    return label if isinstance(label, str) else None


def _foreign_label(class_path: str, label: str, kind: Kind) -> bool:
    """Whether ``label``, declared by a class that is not pat-seg's, is also the label of one of ours."""
    found = resolve(class_path)
    return (found is None or not is_ours(found)) and label in own_labels(kind)


def loss_description(class_path: str) -> LossDescription:
    """How the loss at ``class_path`` is named and which of its arguments identify a run: its own
    description; for a class that declares none, its class name (:func:`class_name`) and no symbols."""
    description = described(class_path)
    if description is None:
        return LossDescription(class_name(class_path))
    if _foreign_label(class_path, description.label, "loss"):
        return dataclasses.replace(description, label=canonical(class_path))
    return description


def label(class_path: str, kind: Kind) -> str:
    """The name a report gives the class at ``class_path`` of ``kind``: a loss's description's label, a
    network's or data module's ``label``; else its class name (a data module's without ``DataModule``)."""
    if kind == "loss":
        return loss_description(class_path).label
    found = resolve(class_path)
    declared_label = _declared_label(found, kind) if found is not None else None
    if declared_label is not None:
        return canonical(class_path) if _foreign_label(class_path, declared_label, kind) else declared_label
    name = class_name(class_path)
    return name.removesuffix("DataModule") if kind == "data" and "." not in name else name


def data_set_name(class_path: str, args: Mapping[str, Any]) -> str | None:
    """The name of the data set that the data module at ``class_path`` read with ``args``, as its class
    names it (``data_set_name``, :meth:`pat_seg.data.SegmentationDataModule.data_set_name`); None when
    the class names none, does not import, or answers with text that cannot stand in a table."""
    found = resolve(class_path)
    naming = getattr(found, "data_set_name", None) if found is not None else None
    name = naming(args) if callable(naming) else None
    return name if isinstance(name, str) and table_text_problem(name) is None else None


def not_identifying(class_path: str) -> frozenset[str]:
    """Arguments of the class that say nothing about the method: those from the data, and those its
    description names."""
    description = described(class_path)
    return frozenset(FROM_THE_DATA) | frozenset(description.not_identifying if description else ())


def loss_plumbing(*configs: dict[str, Any]) -> tuple[str, ...]:
    """Config keys of the loss arguments that do not identify a run, for the loss of each of ``configs``."""
    arguments: set[str] = set(FROM_THE_DATA)
    for config in configs:
        node = (config.get("model") or {}).get("loss")
        path = node.get("class_path") if isinstance(node, dict) else node
        if isinstance(path, str):
            arguments |= not_identifying(path)
    return tuple(f"model.loss.init_args.{argument}" for argument in sorted(arguments))

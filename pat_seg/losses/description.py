"""What the reports and TensorBoard say about a loss, declared by the loss class itself.

Every loss pat-seg ships sets ``description = LossDescription(...)`` in its class body: the name the
paper's tables give it, the arguments its label shows (``PAT (T=20)``), the switches that make an
ablation or an extension of it, and so which of its arguments identify a run and fill the HParams
table. ``pat-seg report``, the run identity and the HParams summary read nothing else about a loss.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

# Arguments that come from the data (or choose a code path) and so say nothing about the method.
FROM_THE_DATA = ("ignore_index", "class_counts", "class_presence", "implementation")


@dataclass(frozen=True)
class LossDescription:
    """How a loss is named and which of its ``__init__`` arguments identify a run.

    Args:
        label: the loss's name in the paper's tables (``"PAT"``, ``"CE"``).
        symbols: arguments the label shows, by symbol (``{"temperature": "T"}`` -> ``PAT (T=20)``).
        switches: arguments that turn the method into an ablation or extension: (the method's own
            setting, what the label says when a run changes it; ``{value}`` is the run's value, words
            that start with ``+`` join the name). A run saved before a switch existed has the setting.
        unused_when_switched: a switch -> the shown argument it leaves without effect.
        not_identifying: arguments that say nothing about the method (filled from the data, or a
            code path with the same result).
    """

    label: str
    symbols: dict[str, str] = field(default_factory=dict)
    switches: dict[str, tuple[Any, str]] = field(default_factory=dict)
    unused_when_switched: dict[str, str] = field(default_factory=dict)
    not_identifying: tuple[str, ...] = FROM_THE_DATA

    def arguments(self, loss_class: type) -> tuple[str, ...]:
        """The ``__init__`` arguments of ``loss_class`` that identify a run (the HParams columns)."""
        names = list(inspect.signature(loss_class).parameters)
        return tuple(name for name in names if name not in self.not_identifying)

    def with_switch_defaults(self, args: dict[str, Any]) -> dict[str, Any]:
        """``args`` with the method's own setting for every switch they lack (a run saved before it existed)."""
        return {**{arg: default for arg, (default, _) in self.switches.items()}, **args}

    def named(self, args: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The label of a run with ``args`` (``"PAT w/o beta"``, ``"PAT+presence alpha=0.5"``) and the
        arguments to show after it, by symbol: switches are in the name, and a shown argument that a
        switch leaves without effect is left out."""
        switched = [arg for arg, (default, _) in self.switches.items() if args.get(arg, default) != default]
        words = [self.switches[arg][1].format(value=short_number(args.get(arg))) for arg in switched]
        spaced = ", ".join(word for word in words if not word.startswith("+"))
        label = self.label + " ".join(word for word in words if word.startswith("+")) + (f" {spaced}" if spaced else "")
        unused = {self.unused_when_switched.get(arg) for arg in switched}
        return label, {arg: symbol for arg, symbol in self.symbols.items() if arg not in unused}


def short_number(value: Any) -> str:
    """``20.0`` -> ``20``: numbers as the paper writes them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)

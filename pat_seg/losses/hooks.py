"""The optional hooks through which a loss receives what only the training run knows (docs/extending.md).

A loss is any ``nn.Module`` with ``forward(logits, target) -> scalar``. It may implement one or more of
the protocols below; :class:`~pat_seg.module.SegmentationModule` checks each with ``isinstance`` and
calls the hook when the loss has it:

- :class:`TakesClassCounts`: the training split's per-class pixel counts ``n_c`` (docs/losses.md,
  "Class counts"), handed over at setup when the loss needs them and was built without any. Every
  :class:`~pat_seg.losses.class_counts.ClassCountLoss` (CB, CB-Focal, BMS, LDAM, BLV) is one.
- :class:`TakesClassPresence`: the per-class share ``pi_l`` of training images that contain the class
  (the presence-corrected Eq. 4, docs/losses.md), handed over the same way. ``PATLoss`` is one.
- :class:`TakesEpoch`: the current training epoch, at the start of each (LDAM's deferred re-weighting).

Both statistics are computed once on rank 0 and broadcast, so every process hands its loss the same.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pat_seg.exceptions import ConfigurationError


@runtime_checkable
class TakesClassCounts(Protocol):
    """A loss that uses the training split's per-class pixel counts.

    ``needs_class_counts``: whether it uses them (may depend on its arguments). ``class_counts``: the
    counts it holds, ``None`` until given. ``set_class_counts(counts)``: use ``counts`` (one
    non-negative number per class, training pixels of that class) from now on.
    """

    @property
    def needs_class_counts(self) -> bool: ...

    @property
    def class_counts(self) -> list[float] | None: ...

    def set_class_counts(self, counts: list[float]) -> None: ...


@runtime_checkable
class TakesClassPresence(Protocol):
    """A loss that uses the share of training images containing each class (``pi_l``, in [0, 1]).

    The members mirror :class:`TakesClassCounts`: ``needs_class_presence``, ``class_presence`` (``None``
    until given) and ``set_class_presence(class_presence)``.
    """

    @property
    def needs_class_presence(self) -> bool: ...

    @property
    def class_presence(self) -> list[float] | None: ...

    def set_class_presence(self, class_presence: list[float]) -> None: ...


@runtime_checkable
class TakesEpoch(Protocol):
    """A loss whose terms depend on the training epoch: ``set_epoch(epoch)`` runs at each epoch's start
    (0 first), before that epoch's first step."""

    def set_epoch(self, epoch: int) -> None: ...


# The switch a loss declares, the protocol that switch promises, and the protocol's members.
_PROMISES: tuple[tuple[str, type, tuple[str, ...]], ...] = (
    ("needs_class_counts", TakesClassCounts, ("class_counts", "set_class_counts")),
    ("needs_class_presence", TakesClassPresence, ("class_presence", "set_class_presence")),
)


def check_hooks(loss: object) -> None:
    """``ConfigurationError`` when ``loss`` says it needs a statistic but lacks the rest of its hook.

    Without this check, a loss that sets ``needs_class_counts = True`` but misspells ``set_class_counts``
    would fail the protocol's ``isinstance`` and train, silently, without the counts it asked for.
    """
    for switch, protocol, members in _PROMISES:
        if getattr(loss, switch, False) and not isinstance(loss, protocol):
            missing = [
                member
                for member in members
                if not hasattr(loss, member) or (member.startswith("set_") and not callable(getattr(loss, member)))
            ]
            raise ConfigurationError(
                f"{type(loss).__qualname__} sets {switch} but has no {' or '.join(missing)}: a loss that needs "
                f"the statistic implements pat_seg.losses.hooks.{protocol.__name__} (docs/extending.md)"
            )

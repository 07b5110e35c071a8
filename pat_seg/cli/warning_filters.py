"""Warnings that pat-seg's dependencies raise inside each other, which a pat-seg user cannot act on.

Each entry names the warning by the start of its message and its category, so nothing else is
hidden. The ``pat-seg`` command ignores them (:func:`ignore_third_party_warnings`); the test suite
ignores the same list (tests/conftest.py), so a new warning of ours still shows in both. The command
also drops Lightning's advertising "Tip" lines from its log (:data:`ADVERTISEMENTS`).
"""

from __future__ import annotations

import logging
import warnings

# (message regex, matched at the start of the message; category), each below who raises it, where.
UNACTIONABLE: tuple[tuple[str, type[Warning]], ...] = (
    # torch, on Lightning's use of torch.utils._pytree.LeafSpec (lightning/pytorch/utilities/_pytree.py)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # jsonargparse, on LightningCLI's call of ArgumentParser.dump(skip_none=...)
    (r"\s*skip_none parameter was deprecated", DeprecationWarning),
    # jsonargparse, on LightningCLI.instantiate_classes
    (r"\s*``instantiate_classes`` was deprecated", DeprecationWarning),
    # jsonargparse, on LightningCLI's checkpoint-loading instantiator
    (r"\s*``ArgumentParser.add_instantiator`` was deprecated", DeprecationWarning),
    # jsonargparse's note that comes with the first of the three above
    (r"\s*By default only one JsonargparseDeprecationWarning per type is shown", DeprecationWarning),
    # torchvision >= 0.29, on every decoded image; pat_seg.data.io reads JPEGs with torchvision.io where
    # it exists (faster than PIL) and falls back to PIL where it is gone
    (r"The image decoding and encoding capabilities of TorchVision are deprecated", DeprecationWarning),
)


# Lightning logs these through its rank-zero logger at every start: suggestions to install other
# products, not information about the run.
ADVERTISEMENTS = ("💡 Tip:",)
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


def _not_an_advertisement(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(ADVERTISEMENTS)


def ignore_third_party_warnings() -> None:
    """Ignore exactly the warnings of :data:`UNACTIONABLE` and the :data:`ADVERTISEMENTS` in this process."""
    for message, category in UNACTIONABLE:
        warnings.filterwarnings("ignore", message=message, category=category)
    logger = logging.getLogger(RANK_ZERO_LOGGER)
    if _not_an_advertisement not in logger.filters:
        logger.addFilter(_not_an_advertisement)


def ini_filter_lines() -> list[str]:
    """The same list as ``filterwarnings`` lines for pytest's ini option."""
    return [f"ignore:{message}:{category.__name__}" for message, category in UNACTIONABLE]

"""Every loss pat-seg ships describes itself: its label, the arguments its label shows, its switches."""

from __future__ import annotations

import inspect

import pytest

from pat_seg.experiments.class_identity import loss_description
from pat_seg.experiments.run_summary import shown_arguments
from pat_seg.experiments.runs import display_labels
from pat_seg.losses import BEYOND_PAPER_LOSSES, PAPER_LOSSES
from pat_seg.losses.description import LossDescription

LOSSES = (*PAPER_LOSSES, *BEYOND_PAPER_LOSSES)
# The paper's Table 3 names its eight methods so (docs/losses.md).
TABLE3_NAMES = ["CE", "Focal", "CB", "CBFocal", "BMS", "LDAM", "BLV", "PAT"]
PAT = "pat_seg.losses.PATLoss"


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: loss.__name__)
def test_each_loss_declares_its_own_description(loss: type) -> None:
    description = loss.__dict__.get("description")  # its own, not one inherited from a base class
    assert isinstance(description, LossDescription), f"{loss.__name__} has no `description = LossDescription(...)`"
    parameters = set(inspect.signature(loss.__init__).parameters) - {"self"}
    named = set(description.symbols) | set(description.switches) | set(description.unused_when_switched.values())
    assert named <= parameters, f"{loss.__name__}'s description names arguments it does not take: {named - parameters}"
    assert set(description.arguments(loss)) <= parameters - set(description.not_identifying)


def test_labels_are_unique_and_table3_keeps_the_papers_names() -> None:
    labels = [loss.description.label for loss in LOSSES]
    assert len(set(labels)) == len(labels)
    assert [loss.description.label for loss in PAPER_LOSSES] == TABLE3_NAMES
    pat = loss_description("pat_seg.losses.PATLoss")
    assert (pat.label, pat.symbols) == ("PAT", {"temperature": "T"})


def test_the_label_and_the_hparams_columns_come_from_the_description() -> None:
    from pat_seg.losses import PATLoss

    labels = display_labels([(PAT, {"temperature": 5.0}), (PAT, {"temperature": 20.0})], "loss")
    assert sorted(labels.values()) == ["PAT (T=20)", "PAT (T=5)"]
    ablation = display_labels([(PAT, {"temperature": 20.0, "confidence_weight": False})], "loss")
    assert list(ablation.values()) == ["PAT w/o beta"]  # T is left out: it weighs nothing without beta
    defaults = {name: parameter.default for name, parameter in inspect.signature(PATLoss).parameters.items()}
    _, columns = shown_arguments(
        {"class_path": "pat_seg.losses.PATLoss", "init_args": {**defaults, "temperature": 5.0}}
    )
    assert columns["temperature"] == 5.0 and "ignore_index" not in columns and "implementation" not in columns


def test_a_class_balanced_b_other_than_the_default_is_named_even_alone() -> None:
    # The paper's b = 0.9999 is another method than b = 1 - 1/N (docs/losses.md): a report holding only
    # such runs must not call them plain "CBFocal".
    alone = display_labels([("pat_seg.losses.ClassBalancedFocalLoss", {"beta": 0.9999, "gamma": 2.0})], "loss")
    assert list(alone.values()) == ["CBFocal b=0.9999"]
    cb = "pat_seg.losses.ClassBalancedLoss"
    both = display_labels([(cb, {"beta": None}), (cb, {"beta": 0.9999})], "loss")
    assert sorted(both.values()) == ["CB", "CB b=0.9999"]

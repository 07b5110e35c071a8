"""The class names of a trained run, for predicting a folder of one's own images with its checkpoint.

A run's ``hparams.yaml`` records the module's ``class_names`` argument, which is None when the data
module named the classes (the usual case), so the names come from the data module of the run's
``config.yaml``: it is built again (data modules read no files when built, only when set up) and its
``class_names`` read. Where that fails (a data module of the user's that needs its files), the
prediction keeps the class indices as names and says why.
"""

from __future__ import annotations

import logging
from typing import Any

from jsonargparse import ArgumentParser

from pat_seg.data.base import SegmentationDataModule
from pat_seg.experiments.run_folder import RunFolder

log = logging.getLogger(__name__)


def classes_of_run(run: RunFolder, num_classes: int | None) -> list[str] | None:
    """The ``class_names`` of the data module ``run`` was trained on (None, with a warning, if unknown)."""
    saved = run.saved_config() or {}
    data = saved.get("data")
    if not isinstance(data, dict):
        return None
    init_args = data.get("init_args") or {}
    names: Any = init_args.get("class_names")  # a data module that takes its classes as an argument
    if not names:
        try:
            parser = ArgumentParser(exit_on_error=False)
            parser.add_subclass_arguments(SegmentationDataModule, "data")
            built = parser.instantiate_classes(parser.parse_object({"data": data}))
            names = getattr(built.data, "class_names", None)
        except Exception as error:  # noqa: BLE001 - any failure only costs the legend its names
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            log.warning(
                "class names of %s unknown (its data module cannot be built here: %s); the legend "
                "shows class indices: give --data.class_names to name them",
                run.path,
                first,
            )
            return None
    names = [str(name) for name in names or []]
    return names if names and (num_classes is None or len(names) == num_classes) else None

"""The ``pat-seg prepare`` command that prepares what a run of ``pat-seg fit`` (``validate``, ``test``)
reads: a data module that reads prepared splits names it in its messages
(:attr:`pat_seg.data.disk.DiskDataModule.prepare_command`), built from the running command's own options.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def prepare_command(options: Sequence[str]) -> str:
    """The ``pat-seg prepare`` command for a data module built from the options of ``pat-seg fit``
    (``validate``, ``test``) ``OPTIONS``: the same options but the checkpoint to resume and
    ``--data.prepared`` (both forms, ``--option=value`` and ``--option value``)."""
    kept, skip_value = [], False
    for argument in options:
        if skip_value:
            skip_value = False
        elif argument in ("--ckpt_path", "--data.prepared"):
            skip_value = True
        elif not argument.startswith(("--ckpt_path=", "--data.prepared=")):
            kept.append(argument)
    return shlex.join(["pat-seg", "prepare", *kept])

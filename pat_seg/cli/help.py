"""Help text of the ``pat-seg`` command: the tools in one screen, and argument help without clutter.

jsonargparse lists, for an argument typed ``nn.Module``, every ``nn.Module`` subclass imported in the
process (about 800 names from torch, timm and torchvision). :class:`PatSegHelpFormatter` shows
pat-seg's own networks and losses there instead, and shortens other long lists to their size.
"""

from __future__ import annotations

import re
from argparse import Action

from jsonargparse import DefaultHelpFormatter

from pat_seg.cli.class_paths import own_choices
from pat_seg.data.io import DEFAULT_MAX_PIXELS

COMMANDS = {
    "fit": "train a model (default: the embedded synthetic data, a small U-Net, the PAT loss)",
    "validate": "evaluate a checkpoint on the validation split (writes <run>/validate/)",
    "test": "evaluate a checkpoint on the test split (writes <run>/test/)",
    "predict": "label PNGs of the test split (<run>/predictions/) or an image folder (predictions_<folder>/)",
    "prepare": "decode and resize a data set's splits once, for fast loading (then fit reads them)",
    "report": "the paper's tables from finished runs (runs that differ only in seed pooled)",
    "sweep": "a grid of runs from configs/sweeps/*.yaml: run here, print, or as a SLURM array",
}
TOP_LEVEL_HELP = """\
usage: pat-seg COMMAND [options]   (pat-seg COMMAND --help for a command's options)

Long-tailed semantic segmentation with the PAT loss.

commands:
{commands}

examples:
  pat-seg fit                                        # embedded data, CPU is fine
  pat-seg prepare --config configs/cityscapes_pat.yaml --data.root /data/cityscapes
  pat-seg fit --config configs/cityscapes_pat.yaml --data.root /data/cityscapes
  pat-seg fit --model.loss CrossEntropyLoss --model.model DeepLabV3Plus
  pat-seg test --config lightning_logs/default/version_0/config.yaml --ckpt_path best
  pat-seg report --logdir lightning_logs

--config takes a file, or one of the configs pat-seg ships by its name in the repository's configs/
folder, from any folder (a path that is a file here comes first): cityscapes_pat.yaml,
configs/cityscapes_pat.yaml, model/deeplabv3plus.yaml, sweeps/table3.yaml (`pat-seg sweep`).

PAT_SEG_MAX_IMAGE_PIXELS=N reads images of up to N pixels (default {max_pixels:,}; larger ones are
refused by name, as a decompression bomb would be).
PAT_SEG_DEBUG=1 shows the full traceback of an error.
"""
LONG_LIST = 12
_KNOWN = re.compile(r", known subclasses: (?P<paths>.*)\)$", re.DOTALL)


def top_level_help() -> str:
    width = max(map(len, COMMANDS))
    return TOP_LEVEL_HELP.format(
        commands="\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()),
        max_pixels=DEFAULT_MAX_PIXELS,
    )


def own_classes(dest: str) -> list[str]:
    """Class paths of pat-seg's losses (for ``model.loss``) or networks (any other argument)."""
    classes = own_choices("model.loss" if dest.endswith("loss") else "model.model")
    return [f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}" for cls in classes]


class PatSegHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, with each "known subclasses" list cut to what helps a pat-seg user."""

    def _get_help_string(self, action: Action) -> str:
        text = super()._get_help_string(action)
        match = _KNOWN.search(text)
        if match is None:
            return text
        paths = [path.strip() for path in match["paths"].split(",")]
        ours = [path for path in own_classes(action.dest) if path in paths]
        if ours:
            names = ", ".join(path.rsplit(".", 1)[1] for path in ours)
            replacement = f"; pat-seg's: {names} (by name), or any importable class path)"
        elif len(paths) > LONG_LIST:
            replacement = f"; {len(paths)} known subclasses, e.g. {', '.join(paths[:4])})"
        else:
            return text
        return text[: match.start()] + replacement

"""``pat-seg prepare``: decode, label-map and resize every split of a disk data module once.

    pat-seg prepare --config configs/cityscapes_pat.yaml --data.root /data/cityscapes
    pat-seg fit --config configs/cityscapes_pat.yaml --data.root /data/cityscapes

It takes ``pat-seg fit``'s options (the data module is built from the same ``--config`` files and
``--data.*`` flags, the rest is ignored), plus ``--splits`` and ``--workers``. Each split is written
by worker processes into a temporary folder that is renamed into place when complete
(:mod:`pat_seg.data.prepared`); a split already prepared for the same protocol and source files is
kept. The data module then reads the prepared arrays (``--data.prepared``, default ``"auto"``).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any

from jsonargparse.typing import PositiveInt

from pat_seg.cli.errors import configuration_error, short_errors
from pat_seg.data.prepared import BuildPlan, PreparedSplitError, build_split, open_manifest

SPLITS = ("train", "val", "test")
HELP = f"""usage: pat-seg prepare [--config CONFIG ...] [--data.* ...] [--splits '[SPLIT, ...]'] [--workers N]

Decode, relabel and resize a data set's splits once into memory-mapped .npy chunks, which `pat-seg fit`
then reads (--data.prepared=auto|require). The data set is the one `pat-seg fit` would train on with
the same --config files and --data.* flags (see `pat-seg fit --help`); nothing else is built.

options:
  --splits '[SPLIT, ...]'  splits to prepare (default: [{", ".join(SPLITS)}])
  --workers N              worker processes (default: the cores this process may use)
  -h, --help               show this message and exit
"""


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def data_module_from_args(argv: list[str]) -> tuple[Any, Any]:
    """The data module ``pat-seg fit ARGV`` would train on, and the prepare options; nothing else is built."""
    from pat_seg.cli import DEFAULT_CONFIG, PatSegCLI
    from pat_seg.cli.app import STRICT_PARSING, refuse_image_folder
    from pat_seg.data.base import SegmentationDataModule
    from pat_seg.module import SegmentationModule

    class PrepareCLI(PatSegCLI):
        def add_arguments_to_parser(self, parser: Any) -> None:
            super().add_arguments_to_parser(parser)
            parser.add_argument(
                "--splits",
                type=list[str],
                default=list(SPLITS),
                help="splits to prepare (default: train, val and test)",
            )
            parser.add_argument(
                "--workers",
                type=PositiveInt,
                default=default_workers(),
                help="worker processes (default: the cores this process may use)",
            )

        def before_instantiate_classes(self) -> None:
            # Not fit's run-folder and trainer adjustments (nothing here trains), but its early refusal.
            refuse_image_folder(self.config, "prepare")

        def instantiate_classes(self) -> None:
            # Only the data module: the model, trainer and loggers of the shared config are not needed.
            try:
                self.datamodule = instantiate_data_module(self.config["data"])
            except (ValueError, TypeError) as error:  # a constructor's rejection, as `fit` reports it
                rejection = configuration_error(error)
                if rejection is None:
                    raise
                raise rejection from error

    with warnings.catch_warnings():  # the arguments are sys.argv's own, minus the command name
        warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
        cli = PrepareCLI(
            SegmentationModule,
            SegmentationDataModule,
            subclass_mode_data=True,
            run=False,
            args=argv,
            parser_kwargs={"default_config_files": [DEFAULT_CONFIG], "prog": "pat-seg prepare", **STRICT_PARSING},
            auto_configure_optimizers=False,
            save_config_callback=None,
        )
    return cli.datamodule, cli.config


def instantiate_data_module(data: Any) -> Any:
    """The data module of a parsed ``data`` section (``class_path`` + ``init_args``), instantiated by
    jsonargparse on the parser argument LightningCLI registers for ``fit``'s ``--data``, so that nested
    class paths and typed arguments become what ``fit`` would pass."""
    from lightning.pytorch.cli import LightningArgumentParser

    from pat_seg.data.base import SegmentationDataModule

    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(SegmentationDataModule, "data", subclass_mode=True)
    config = parser.parse_object({"data": data})
    # jsonargparse 4.49 renamed instantiate_classes (the name LightningCLI calls, deprecated) to instantiate.
    instantiate = getattr(parser, "instantiate", parser.instantiate_classes)
    return instantiate(config).data


def prepare(datamodule: Any, splits: list[str], workers: int, stream: Any = sys.stderr) -> dict[str, str]:
    """Prepare ``splits`` of ``datamodule`` (a :class:`~pat_seg.data.disk.DiskDataModule`) with
    ``workers`` processes; what happened to each split (``"prepared in ..."`` or ``"up to date"``)."""
    from tqdm import tqdm

    from pat_seg.data.disk import DiskDataModule

    if not isinstance(datamodule, DiskDataModule):
        raise ValueError(
            f"{type(datamodule).__name__} is not read from files, so there is nothing to prepare; "
            "`pat-seg prepare` takes the disk data modules (CityscapesDataModule, NYUv2DataModule, "
            "OxfordPetDataModule, SegmentationFolderDataModule)"
        )
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ValueError(f"--splits must name some of {', '.join(SPLITS)}; got {splits}")
    datamodule.check_prepared_dir_writable()
    done: dict[str, str] = {}
    for split in splits:
        samples = datamodule.build_samples(split, datamodule.sample_transform(split))
        request = datamodule.split_request(split, samples)
        try:
            open_manifest(request)
            done[split] = f"up to date in {request.folder}"
            stream.write(f"{split}: {len(samples)} images already prepared in {request.folder}\n")
            continue
        except PreparedSplitError:
            pass
        stored = datamodule.stored_size(split)
        plan = BuildPlan(
            load=samples.load,
            count=len(samples),
            stored=datamodule.stored_transform(split),  # what reading the sources applies per sample
            statistics_size=datamodule.size,
            num_classes=datamodule.num_classes,
            ignore_index=datamodule.ignore_index,
        )
        start = time.perf_counter()
        with tqdm(
            total=len(samples),
            desc=f"{split} ({stored[0]}x{stored[1]})",
            unit=" images",
            file=stream,
            dynamic_ncols=True,
            mininterval=1.0,
        ) as bar:
            folder = build_split(request, plan, datamodule.class_names, workers, progress=bar.update)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in folder.iterdir()) / 2**30
        done[split] = f"prepared in {folder}"
        stream.write(
            f"{split}: {len(samples)} images in {seconds:.1f} s ({len(samples) / seconds:.1f} images/s, "
            f"{workers} workers), {size:.2f} GiB in {folder}\n"
        )
    return done


def main(argv: list[str] | None = None) -> None:
    """``pat-seg prepare [fit's options] [--splits ...] [--workers N]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(argv):  # not fit's 500 lines of trainer and model options
        sys.stdout.write(HELP)
        return
    with short_errors("prepare"):
        datamodule, config = data_module_from_args(argv)
        prepare(datamodule, list(config["splits"]), int(config["workers"]))

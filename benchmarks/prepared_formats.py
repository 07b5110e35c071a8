"""Prepared-split formats compared on the same arrays: pat-seg's memory-mapped ``.npy`` chunks and LitData.

    python benchmarks/prepared_formats.py --root /tmp/pat-seg-data     # after benchmarks/data.py made it

Reads the prepared Cityscapes paper-protocol training split that ``benchmarks/data.py`` (or
``pat-seg prepare``) wrote under ``--root`` (256x512 uint8 images and label maps), writes the same
samples with ``litdata.optimize`` (uint8 numpy arrays, no compression, LitData's default
serialisation), and times a training-style pass with one loader worker over each, batch 8: pat-seg's
``PreparedSamples`` through a ``DataLoader`` with the package's ``ResumableShuffleSampler``, and
LitData's ``StreamingDataset`` (shuffled) through its ``StreamingDataLoader``. Images/s per worker is
the worker's CPU time per image inverted (as in ``benchmarks/data.py``); passes repeat the split
until they hold ``--min-images``. LitData is not a pat-seg dependency: install it to run this
(``pip install litdata``); the script says so and exits otherwise. Results: docs/datasets.md,
"Prepared splits".
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as data_bench  # noqa: E402  (benchmarks/data.py: fixtures, protocols and the data modules)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_pass(loader: Any, count: int) -> tuple[float, float]:
    """``(CPU ms per image of this process and its finished workers, wall images/s)`` of one pass."""
    start_cpu = time.process_time() + children_cpu_s()
    start = time.perf_counter()
    seen = 0
    for batch in loader:
        seen += batch["image"].shape[0]
    wall = time.perf_counter() - start
    del loader  # joins the worker, whose CPU time then counts in RUSAGE_CHILDREN
    cpu = time.process_time() + children_cpu_s() - start_cpu
    assert seen == count, (seen, count)
    return 1000 * cpu / seen, seen / wall


class LitDataSample:
    """``optimize``'s function (picklable for its worker): one prepared sample as the dict LitData stores."""

    def __init__(self, arrays: Any) -> None:
        self.arrays = arrays

    def __call__(self, index: int) -> dict[str, Any]:
        image, target = self.arrays[index % len(self.arrays)]
        return {"index": index, "image": image.numpy(), "target": target.numpy()}


def main(argv: list[str] | None = None) -> None:
    parse = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parse.add_argument("--root", required=True, help="benchmarks/data.py's --root (fixtures already written)")
    parse.add_argument("--images", type=int, default=48, help="benchmarks/data.py's --images")
    parse.add_argument("--min-images", type=int, default=2000, help="images per timed pass (the split repeated)")
    parse.add_argument("--repeats", type=int, default=3)
    args = parse.parse_args(argv)
    try:
        import litdata
    except ImportError:
        print("LitData is not installed (pip install litdata); nothing to compare")
        return
    from pat_seg.cli.prepare import prepare

    torch.set_num_threads(1)
    protocol = next(p for p in data_bench.PROTOCOLS if p.config == "cityscapes_paper")
    paths = data_bench.make_fixtures(Path(args.root), args.images, 1.0)
    datamodule = data_bench.build(protocol, paths["cityscapes"], 1.0, 8, 1, "auto")
    prepare(datamodule, ["train"], 2, stream=open("/dev/null", "w"))
    datamodule = data_bench.build(protocol, paths["cityscapes"], 1.0, 8, 1, "require")
    dataset = datamodule.dataset("train")
    times = -(-args.min_images // len(dataset))
    count = times * len(dataset)
    results: dict[str, list[tuple[float, float]]] = {"pat-seg .npy chunks": [], "LitData": []}
    # pat-seg's passes first: LitData's optimize leaves worker processes whose CPU time would be
    # counted (RUSAGE_CHILDREN) in whatever pass runs when they are reaped.
    for _ in range(args.repeats):
        datamodule._datasets["train"] = data_bench.Repeated(dataset, times)
        results["pat-seg .npy chunks"].append(timed_pass(datamodule.train_dataloader(), count))
    with tempfile.TemporaryDirectory(prefix="pat-seg-litdata-") as scratch:
        output = Path(scratch) / "optimized"
        start = time.perf_counter()
        litdata.optimize(
            fn=LitDataSample(dataset.arrays),
            inputs=list(range(count)),
            output_dir=str(output),
            chunk_bytes="256MB",
            num_workers=1,
            verbose=False,
        )
        optimize_s = time.perf_counter() - start
        size = sum(f.stat().st_size for f in output.iterdir())
        timed_pass(
            litdata.StreamingDataLoader(litdata.StreamingDataset(str(output)), batch_size=8, num_workers=1), count
        )
        for _ in range(args.repeats):
            streaming = litdata.StreamingDataset(str(output), shuffle=True, seed=0)
            results["LitData"].append(
                timed_pass(litdata.StreamingDataLoader(streaming, batch_size=8, num_workers=1), count)
            )
        shutil.rmtree(output, ignore_errors=True)
    print(
        f"Cityscapes paper protocol (256x512 uint8), {count} images per pass, 1 loader worker, batch 8, "
        f"median of {args.repeats}; litdata {litdata.__version__}, optimize: {optimize_s:.1f} s, "
        f"{size / count / 1024:.0f} KiB per sample"
    )
    print("| format | images/s per worker (CPU) | wall images/s |")
    print("|---|---:|---:|")
    for name, passes in results.items():
        cpu_ms = statistics.median(p[0] for p in passes)
        wall = statistics.median(p[1] for p in passes)
        print(f"| {name} | {1000 / cpu_ms:.0f} | {wall:.0f} |")


if __name__ == "__main__":
    main()

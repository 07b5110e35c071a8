"""Images per second per loader worker of every disk data module, on generated files of the publishers' sizes.

    python benchmarks/data.py                                   # fixtures in a temporary folder
    python benchmarks/data.py --root /tmp/pat-seg-data --step-ms 100 --markdown table.md

Generates each data set in its publisher's layout (what ``pat_seg.data`` reads, docs/datasets.md) at
the real file sizes: Cityscapes 2048x1024 RGB PNGs (about 2.3 MB, like ``leftImg8bit``: 11 GB for
5,000 images) with ``gtFine_labelIds`` PNGs; the NYUv2 npy tree at 288x384 (float32 images in [0, 1],
float32 labels -1..12) and the official ``nyu_depth_v2_labeled.mat`` (HDF5, 640x480, uint8 images and
uint16 labels, deflate-compressed, one image per chunk) with its two meta files; Oxford-IIIT Pet JPEGs
of about 500x375 and 100 KB (``images.tar.gz``: 790 MB for 7,390 images) with trimap PNGs; CamVid in
the SegNet tutorial's layout (480x360 RGB PNGs with class-index mask PNGs), which
``SegmentationFolderDataModule`` reads, with its file checks timed as well. Only the data sets of
the protocols ``--only`` selects are generated. Image
content is a smooth colour field plus noise whose amount sets the compressed size; labels are drawn
regions, so label PNGs compress as real ones do. Files are read from the page cache: disk speed is
not part of the measurement.

Then, for each protocol of ``configs/data/*.yaml`` (the paper's and the standard one) and each
``--paths`` (``sources``: decoding the files on every epoch; ``prepared``: the memory-mapped arrays
``pat-seg prepare`` writes, :mod:`pat_seg.data.prepared`), it times the training loader that the data
module builds, as ``pat-seg fit`` uses it:

- per stage, in this process with one torch thread: ``load`` (reading, decoding, label mapping) and
  ``transform`` (what a loader worker does after it: the resize to the size the split is stored at,
  and an augmented split's random parameters); label mapping alone is timed inside
  ``LabelTable.__call__``;
- end to end, ``train_dataloader()`` with 0 (this process, one torch thread), 1 and 2 workers (one
  torch thread each), median of ``--repeats`` passes: the CPU time per image of the loader's
  processes, which gives the images/s of one worker on a core of its own, and the wall-clock rate
  (steady, start-up excluded) as the machine delivered it;
- for the augmented protocols, the random scale, crop and flip of a batch in the data module's
  ``on_after_batch_transfer`` (both paths), on the GPU if there is one, else in this process: on a
  CPU-only machine the training process does it, not the loader workers.

For the prepared path it first runs ``pat-seg prepare``'s build of the training split with
``--prepare-workers`` processes and reports its wall time per image, and for Cityscapes that time
extrapolated to the 2,975 images of the official training split.

Per-stage and per-worker numbers are CPU time, so that a shared machine's other load does not
stretch them; the wall-clock rates show that load. The script also says how many workers keep a GPU
training step fed: the step of ``benchmarks/gpu_check.py``'s part 4 (DeepLabV3+ ResNet-50, batch 8
of 512x1024) takes ``--step-ms`` milliseconds, scaled by the pixel count for the other protocol
sizes (a convolutional network's step time is close to proportional to its pixels once the GPU is
busy), so it consumes ``8 / step`` images per second. Results: docs/benchmarks.md, "Data loaders".
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
# The item-4 training step of gpu_check.py: batch and image size it consumes per step.
STEP_BATCH, STEP_PIXELS = 8, 512 * 1024
# Assumed H100/H200 time of that step until one is measured (gpu_check.py part 4 measures it): at
# output stride 16 and 512x1024, the ResNet-50 (dilated last stage), ASPP and decoder take about 125
# GMAC, 0.25 TFLOP, per image forward, so about 6 TFLOP per training step of 8 images (backward about
# twice the forward); at 40% of the bf16 dense peak (~990 TFLOP/s) that is 15 ms of convolutions,
# and normalisation, activations, optimiser and framework at memory speed add about twice that.
DEFAULT_STEP_MS = 50.0


# --- generated files in the publishers' layouts ------------------------------------------------------
def photo(rng: np.random.Generator, height: int, width: int, noise: float) -> np.ndarray:
    """``uint8 [H, W, 3]``: smooth random colour waves plus Gaussian noise (which sets the compressed size)."""
    y = np.arange(height, dtype=np.float32)[:, None] / height
    x = np.arange(width, dtype=np.float32)[None, :] / width
    channels = []
    for _ in range(3):
        fy, fx, fd = rng.uniform(2, 12, size=3)
        py, px = rng.uniform(0, 2 * np.pi, size=2)
        channels.append(
            128
            + 60 * np.sin(2 * np.pi * fx * x + px) * np.cos(2 * np.pi * fy * y + py)
            + 40 * np.sin(2 * np.pi * fd * (x + y))
        )
    image = np.stack(channels, axis=-1) + rng.normal(0, noise, (height, width, 3)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def regions(
    rng: np.random.Generator, height: int, width: int, values: list[int], background: list[int], count: int
) -> np.ndarray:
    """``uint8 [H, W]`` label map: horizontal bands of ``background`` values under ``count`` random polygons."""
    canvas = Image.new("L", (width, height))
    draw = ImageDraw.Draw(canvas)
    bands = np.sort(rng.uniform(0, height, size=len(background) - 1)).tolist()
    for value, (top, bottom) in zip(background, zip([0.0, *bands], [*bands, float(height)])):
        draw.rectangle([0, top, width, bottom], fill=int(value))
    for _ in range(count):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.01, 0.12) * min(height, width)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(5, 12))))
        radii = radius * rng.uniform(0.5, 1.5, size=len(angles))
        points = [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a, r in zip(angles, radii)]
        draw.polygon(points, fill=int(rng.choice(values)))
    return np.asarray(canvas)


def scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(8, round(size[0] * scale)), max(8, round(size[1] * scale))


def write_cityscapes(root: Path, count: int, scale: float, rng: np.random.Generator) -> None:
    """``leftImg8bit/train/<city>/*_leftImg8bit.png`` (2048x1024 RGB) and ``gtFine/.../*_gtFine_labelIds.png``."""
    height, width = scaled((1024, 2048), scale)
    # labelIds: sky, building, vegetation, sidewalk, road as bands; cars, people, poles, signs, void on top.
    background, objects = [23, 11, 21, 8, 7], [26, 26, 24, 25, 17, 20, 19, 21, 13, 0, 1, 4, 33, 255]
    for i in range(count):
        city = ("aachen", "bochum", "bremen", "cologne")[i % 4]
        stem = f"{city}_{i:06d}_000019"
        image_dir, label_dir = root / "leftImg8bit" / "train" / city, root / "gtFine" / "train" / city
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(rng, height, width, noise=1.0)).save(image_dir / f"{stem}_leftImg8bit.png")
        label = regions(rng, height, width, objects, background, count=60)
        Image.fromarray(label).save(label_dir / f"{stem}_gtFine_labelIds.png")


def write_nyuv2_npy(root: Path, count: int, scale: float, rng: np.random.Generator) -> None:
    """MTAN's tree: ``{train,val}/{image,label}/<i>.npy``, 288x384, float32 images and labels (-1 unlabelled)."""
    height, width = scaled((288, 384), scale)
    for split, n in (("train", count), ("val", max(2, count // 4))):
        for kind in ("image", "label"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", photo(rng, height, width, noise=3.0).astype(np.float32) / 255)
            label = regions(rng, height, width, list(range(13)), [2, 11, 4], count=20).astype(np.float32)
            label[rng.random((height, width)) < 0.002] = -1  # unlabelled specks
            label[:, : max(1, width // 40)] = -1  # and an unlabelled border, as the Kinect crop leaves
            np.save(root / split / "label" / f"{i}.npy", label)


def write_nyuv2_mat(root: Path, count: int, scale: float, rng: np.random.Generator) -> None:
    """Official ``nyu_depth_v2_labeled.mat`` (v7.3 = HDF5 after a 512-byte user block) + splits + mapping."""
    import h5py

    height, width = scaled((480, 640), scale)
    root.mkdir(parents=True, exist_ok=True)
    total = count + max(1, count // 4)  # ``count`` training images (trainNdxs) and a few test ones
    # Raw label ids 1..894 (0 = unlabelled): regions are drawn as indices into this table.
    raw_ids = np.concatenate([[0], rng.integers(1, 895, size=39)]).astype(np.uint16)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w", userblock_size=512) as file:
        # MATLAB's HxWx3xN images are N x 3 x W x H in HDF5, HxWxN labels N x W x H.
        images = file.create_dataset(
            "images",
            (total, 3, width, height),
            dtype=np.uint8,
            chunks=(1, 3, width, height),
            compression="gzip",
            compression_opts=3,
        )
        labels = file.create_dataset(
            "labels",
            (total, width, height),
            dtype=np.uint16,
            chunks=(1, width, height),
            compression="gzip",
            compression_opts=3,
        )
        for i in range(total):
            images[i] = photo(rng, height, width, noise=3.0).transpose(2, 1, 0)
            labels[i] = raw_ids[regions(rng, height, width, list(range(40)), [1, 2, 0], count=25)].T
    train = np.arange(1, count + 1, dtype=np.float64)  # 1-based, as MATLAB
    test = np.arange(count + 1, total + 1, dtype=np.float64)
    for name, variables in (
        ("splits.mat", {"trainNdxs": train, "testNdxs": test}),
        ("classMapping40.mat", {"mapClass": (np.arange(894) % 40 + 1).astype(np.float64)}),
    ):
        with h5py.File(root / name, "w", userblock_size=512) as file:
            for key, value in variables.items():
                file[key] = value[None, :]  # MATLAB row vector, stored transposed


def write_oxford_pet(root: Path, count: int, scale: float, rng: np.random.Generator) -> None:
    """``images/<name>.jpg`` (about 500x375, 100 KB), ``annotations/trimaps/<name>.png``, split lists."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    breeds = ["Abyssinian", "Bengal", "beagle", "pug", "samoyed", "yorkshire_terrier"]
    trainval = math.ceil(count / 0.9) + 1  # the module holds out 10% of trainval for validation
    names = [f"{breeds[i % len(breeds)]}_{i + 1}" for i in range(trainval + 4)]
    for i, name in enumerate(names):
        height, width = scaled((375, 500) if i % 3 else (500, 375), scale)  # a third are portrait
        Image.fromarray(photo(rng, height, width, noise=20.0)).save(root / "images" / f"{name}.jpg", quality=90)
        trimap = Image.new("L", (width, height), 2)  # background
        draw = ImageDraw.Draw(trimap)
        box = [
            width * rng.uniform(0.1, 0.3),
            height * rng.uniform(0.1, 0.3),
            width * rng.uniform(0.7, 0.9),
            height * rng.uniform(0.7, 0.9),
        ]
        draw.ellipse(box, fill=3)  # border ring around the pet
        draw.ellipse([box[0] + 4, box[1] + 4, box[2] - 4, box[3] - 4], fill=1)
        trimap.save(root / "annotations" / "trimaps" / f"{name}.png")
    for split, part in (("trainval", names[:trainval]), ("test", names[trainval:])):
        lines = [f"{name} {1 + i % 37} {1 + i % 2} {1 + i % 12}" for i, name in enumerate(part)]
        (root / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


CAMVID_VOID = 11  # "Unlabelled" in the SegNet tutorial's masks


def write_camvid(root: Path, count: int, scale: float, rng: np.random.Generator) -> None:
    """The SegNet tutorial's CamVid: ``{train,val}/<name>.png`` (480x360 RGB) and ``{train,val}annot/<name>.png``
    (class values 0..10, 11 unlabelled), read by ``SegmentationFolderDataModule`` (configs/data/camvid.yaml)."""
    height, width = scaled((360, 480), scale)
    # Sky, building, tree, pavement, road as bands; poles, signs, fences, cars, people, bicyclists, void on top.
    background, objects = [0, 1, 5, 4, 3], [2, 6, 7, 8, 8, 9, 10, CAMVID_VOID]
    for split, n in (("train", count), ("val", max(2, count // 4))):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"0001TP_{i:06d}"
            Image.fromarray(photo(rng, height, width, noise=1.0)).save(root / split / f"{name}.png")
            label = regions(rng, height, width, objects, background, count=30)
            Image.fromarray(label).save(root / f"{split}annot" / f"{name}.png")


WRITERS: dict[str, Callable[[Path, int, float, np.random.Generator], None]] = {
    "cityscapes": write_cityscapes,
    "nyuv2_npy": write_nyuv2_npy,
    "nyuv2_mat": write_nyuv2_mat,
    "oxford_pet": write_oxford_pet,
    "camvid": write_camvid,
}


def make_fixtures(root: Path, count: int, scale: float, names: list[str]) -> dict[str, Path]:
    """Write the data sets ``names`` under ``root`` (each reused when its ``fixture.json`` records the same settings)."""
    settings = {"count": count, "scale": scale, "version": 2}
    paths = {name: root / name for name in names}
    for name in names:
        marker = paths[name] / "fixture.json"
        if marker.is_file() and json.loads(marker.read_text()) == settings:
            continue
        WRITERS[name](paths[name], count, scale, np.random.default_rng(len(name)))
        marker.write_text(json.dumps(settings))
    return paths


def mean_file_kib(root: Path, pattern: str) -> float:
    sizes = [p.stat().st_size for p in root.glob(pattern)]
    return sum(sizes) / len(sizes) / 1024 if sizes else 0.0


# --- protocols -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """One data module configuration: ``configs/data/<config>.yaml`` on the fixture ``fixture``."""

    dataset: str
    name: str
    config: str
    fixture: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.dataset} / {self.name}"


PROTOCOLS = [
    Protocol("Cityscapes", "paper (20 classes, 256x512)", "cityscapes_paper", "cityscapes"),
    Protocol("Cityscapes", "standard (19 classes, 512x1024, augmented)", "cityscapes", "cityscapes"),
    Protocol("NYUv2 npy", "paper (14 classes, 288x384)", "nyuv2_paper", "nyuv2_npy"),
    Protocol("NYUv2 npy", "standard (13 classes, 288x384, augmented)", "nyuv2", "nyuv2_npy"),
    Protocol("NYUv2 .mat", "standard (13 classes, 640x480 -> 288x384, augmented)", "nyuv2", "nyuv2_mat"),
    Protocol("Oxford Pet", "paper (3 classes, 256x256)", "oxford_pet", "oxford_pet"),
    Protocol("Oxford Pet", "paper + augmentation (256x256)", "oxford_pet", "oxford_pet", {"augment": True}),
    Protocol("CamVid (folder)", "11 classes, 360x480, augmented", "camvid", "camvid"),
]


def build(
    protocol: Protocol, root: Path, scale: float, batch_size: int, num_workers: int, prepared: str = "off"
) -> Any:
    """The data module of ``protocol`` as ``configs/data/<config>.yaml`` builds it, on ``root``
    (``prepared``: the data module's option; prepared splits go to ``root/../prepared``)."""
    config = yaml.safe_load((REPO / "configs" / "data" / f"{protocol.config}.yaml").read_text())
    module_name, class_name = config["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    args = {
        **config["init_args"],
        **protocol.overrides,
        "root": str(root),
        "batch_size": batch_size,
        "num_workers": num_workers,
        "persistent_workers": False,
        "pin_memory": False,
        "prepared": prepared,
        "prepared_dir": str(root.parent / "prepared" / root.name),
    }
    args["size"] = list(scaled(tuple(args["size"]), scale))
    return cls(**args)


# --- timing --------------------------------------------------------------------------------------------
@contextmanager
def one_thread() -> Iterator[None]:
    """This process runs torch on one thread, as a DataLoader worker does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def timed_label_mapping(total: list[float]) -> Iterator[None]:
    """Add the CPU seconds spent in ``LabelTable.__call__`` to ``total[0]`` while active."""
    from pat_seg.data.io import LabelTable

    original = LabelTable.__call__

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            total[0] += time.process_time() - start

    LabelTable.__call__ = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        LabelTable.__call__ = original  # type: ignore[method-assign]


def profile_stages(dataset: Any, count: int) -> dict[str, Any]:
    """CPU milliseconds per image of ``load`` (read + decode + label mapping) and ``transform``, one thread.

    Process CPU time, not wall time: on a shared machine other processes' load stretches the wall
    clock but not the CPU time this process spends.
    """
    torch.manual_seed(0)
    load_s = transform_s = 0.0
    mapping = [0.0]
    indices = [i % len(dataset) for i in range(count)]
    # What a loader worker runs: samples stay uint8 (converted, and augmented, on the device).
    transform = dataset.transform
    with one_thread(), timed_label_mapping(mapping):
        for index in indices:
            start = time.process_time()
            image, label = dataset.load(index)
            middle = time.process_time()
            transform(image, label)
            load_s += middle - start
            transform_s += time.process_time() - middle
    per_image = 1000 / len(indices)
    return {
        "decode_ms": (load_s - mapping[0]) * per_image,
        "label_mapping_ms": mapping[0] * per_image,
        "transform_ms": transform_s * per_image,
        "total_ms": (load_s + transform_s) * per_image,
        "label_held": f"{str(label.dtype).removeprefix('torch.')} {'x'.join(map(str, label.shape))}",
        "label_mib": label.numel() * label.element_size() / 2**20
        if isinstance(label, torch.Tensor)
        else label.nbytes / 2**20,
    }


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Repeated(torch.utils.data.Dataset):
    """``dataset`` ``times`` times over (sample ``i`` is ``dataset[i % len(dataset)]``): a pass long enough
    that a worker's start-up is a small part of its CPU time, for data that loads in a millisecond."""

    def __init__(self, dataset: Any, times: int) -> None:
        self.dataset, self.times = dataset, times

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index % len(self.dataset)]


def loader_pass(datamodule: Any, num_workers: int) -> tuple[float, float]:
    """One pass over ``train_dataloader()``: ``(steady wall images/s, CPU ms per image)``.

    Wall: from the batch by which every worker has delivered once (workers start together, so their
    first batches arrive at about the same time after start-up) to the last batch. CPU: this
    process's and the finished workers' CPU time over the whole pass, per image: what one image
    costs a core, whatever else the machine runs.
    """
    datamodule.num_workers = num_workers
    loader = datamodule.train_dataloader()
    skip = max(1, num_workers)
    if len(loader) <= skip:
        raise ValueError(f"{len(loader)} batches cannot time {num_workers} workers; generate more --images")
    arrivals, sizes = [], []
    with one_thread():
        cpu_start = time.process_time() + children_cpu_s()
        for batch in loader:
            arrivals.append(time.perf_counter())
            sizes.append(batch["image"].shape[0])
        del loader  # the workers exit and are joined: their CPU time is in RUSAGE_CHILDREN now
        cpu = time.process_time() + children_cpu_s() - cpu_start
    return sum(sizes[skip:]) / (arrivals[-1] - arrivals[skip - 1]), 1000 * cpu / sum(sizes)


def device_augment_ms(datamodule: Any, repeats: int = 5) -> tuple[float, str]:
    """Milliseconds per batch of the data module's ``on_after_batch_transfer`` (the on-device random
    scale, crop and flip of an augmented split, from the sources or prepared alike) on the GPU if there
    is one, else this CPU (where it runs in the training process, not in the loader workers)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datamodule.num_workers = 0
    batch = next(iter(datamodule.train_dataloader()))
    times = []
    with one_thread():
        for _ in range(repeats + 1):
            moved = {key: value.to(device) for key, value in batch.items()}
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            datamodule.on_after_batch_transfer(moved, 0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(1000 * (time.perf_counter() - start))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "this CPU, one thread"
    return statistics.median(times[1:]), name


def file_check_ms(datamodule: Any) -> float | None:
    """CPU milliseconds per image of the checks a folder data module runs before a command starts
    (``check_splits``: pairing, each image's header, each mask decoded and mapped), this process, one thread."""
    if not hasattr(datamodule, "check_splits"):
        return None
    datamodule.num_workers = 0
    with one_thread():
        start = time.process_time()
        datamodule.check_splits(["train"])
        seconds = time.process_time() - start
    return 1000 * seconds / len(datamodule.build_samples("train", datamodule.sample_transform("train")))


def required_rate(size: tuple[int, int], step_ms: float, scale: float = 1.0) -> float:
    """Images/s the item-4 GPU step consumes at ``size``: 8 images per ``step_ms``, scaled by pixels.

    ``scale`` is the fixtures' shrink factor: the step's 512x1024 shrinks with it.
    """
    step_s = step_ms / 1000 * (size[0] * size[1]) / (STEP_PIXELS * scale**2)
    return STEP_BATCH / step_s


CITYSCAPES_TRAIN_IMAGES = 2975


def prepare_train(protocol: Protocol, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Build the prepared training split of ``protocol`` afresh; wall seconds per image and the workers."""
    import shutil

    from pat_seg.cli.prepare import prepare

    datamodule = build(protocol, root, args.scale, args.batch_size, 0)
    folder = datamodule.split_request(
        "train", datamodule.build_samples("train", datamodule.sample_transform("train"))
    ).folder
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    prepare(datamodule, ["train"], args.prepare_workers, stream=open(os.devnull, "w"))
    seconds = time.perf_counter() - start
    count = len(datamodule.build_samples("train", datamodule.sample_transform("train")))
    stored = sum(f.stat().st_size for f in folder.glob("chunk-*.npy"))
    result = {
        "seconds": seconds,
        "images": count,
        "workers": args.prepare_workers,
        "seconds_per_image": seconds / count,
        "bytes_per_image": stored / count,
    }
    if protocol.dataset == "Cityscapes":
        result["cityscapes_train_seconds"] = seconds / count * CITYSCAPES_TRAIN_IMAGES
    return result


def measure(protocol: Protocol, root: Path, args: argparse.Namespace, path: str = "sources") -> dict[str, Any]:
    """Stage profile and loader rates of one protocol read from ``path`` ("sources" or "prepared");
    workers needed to feed the GPU step."""
    built = prepare_train(protocol, root, args) if path == "prepared" else None
    datamodule = build(protocol, root, args.scale, args.batch_size, 0, "require" if path == "prepared" else "off")
    checked = file_check_ms(datamodule) if path == "sources" else None
    profile = profile_stages(datamodule.dataset("train"), args.profile_images)
    train = datamodule.dataset("train")
    # At least 0.5 ms per image: the batch transfer, which the stage profile leaves out, costs about that.
    times = max(1, math.ceil(args.min_pass_s * 1000 / max(profile["total_ms"], 0.5) / len(train)))
    # The data module builds each split once and keeps it: the loader passes read the repeated one.
    datamodule._datasets["train"] = Repeated(train, times)
    wall, cpu_ms = {}, {}
    for workers in args.workers:
        passes = [loader_pass(datamodule, workers) for _ in range(args.repeats)]
        wall[str(workers)] = statistics.median(p[0] for p in passes)
        cpu_ms[str(workers)] = statistics.median(p[1] for p in passes)
    # A worker process is the unit a user adds: its CPU cost per image (batch transfer included)
    # sets the images/s one worker delivers on a core of its own.
    unit = "1" if "1" in cpu_ms else next(iter(cpu_ms))
    per_worker = 1000 / cpu_ms[unit]
    needed = required_rate(datamodule.size, args.step_ms, args.scale)
    on_device = device_augment_ms(datamodule) if datamodule.augmented("train") else None
    return {
        "dataset": protocol.dataset,
        "protocol": protocol.name,
        "path": path,
        "device_augment_ms_per_batch": on_device,
        "file_check_ms_per_image": checked,
        "prepare": built,
        "size": list(datamodule.size),
        "train_images": len(train),
        "pass_images": len(train) * times,
        "profile": profile,
        "wall_images_per_s": wall,
        "cpu_ms_per_image": cpu_ms,
        "images_per_s_per_worker": per_worker,
        "per_worker_from": f"{unit} worker(s)",
        "required_images_per_s": needed,
        "workers_needed": math.ceil(needed / per_worker),
    }


# --- report --------------------------------------------------------------------------------------------
def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores of {model}"


def markdown(results: list[dict[str, Any]], files: dict[str, float], args: argparse.Namespace) -> str:
    workers = [str(w) for w in args.workers]
    lines = [
        f"Data loaders on {machine()}, torch {torch.__version__}, {date.today().isoformat()}: batch "
        f"{args.batch_size}, {args.images} generated training images per data set (scale {args.scale}; mean "
        "files: " + ", ".join(f"{name} {kib:.0f} KiB" for name, kib in files.items()) + "). CPU ms/image: "
        f"process CPU time in one thread, mean of {args.profile_images} images. Images/s per worker: one "
        f"worker's CPU time per image (batch transfer included), median of {args.repeats} passes of at least "
        f"{args.min_pass_s:g} s of loading (the split repeated when shorter). Wall "
        "images/s: steady rate of the loader on this machine as it was loaded. Workers: to feed "
        f"{STEP_BATCH} images per {args.step_ms:g} ms at 512x1024, scaled by pixels.",
        "",
        "| data set | protocol | read from | CPU ms/image: decode, label map, transform = total | label map held "
        "| images/s per worker | wall images/s, " + " / ".join(workers) + " workers | workers needed |",
        "|---|---|---|---|---|---:|---|---:|",
    ]
    for r in results:
        p = r["profile"]
        wall = " / ".join(f"{r['wall_images_per_s'][w]:.1f}" for w in workers)
        lines.append(
            f"| {r['dataset']} | {r['protocol']} | {r['path']} | {p['decode_ms']:.1f} + {p['label_mapping_ms']:.1f} + "
            f"{p['transform_ms']:.1f} = {p['total_ms']:.1f} | {p['label_held']} | {r['images_per_s_per_worker']:.1f} | "
            f"{wall} | {r['workers_needed']} ({r['required_images_per_s']:.0f} img/s) |"
        )
    augmented = [r for r in results if r.get("device_augment_ms_per_batch")]
    if augmented:
        lines += [
            "",
            "Augmented splits (sources and prepared): random scale, crop and flip of a batch in `on_after_batch_transfer`, "
            "ms per batch of "
            + str(args.batch_size)
            + ": "
            + "; ".join(
                f"{r['dataset']} / {r['protocol']} {r['device_augment_ms_per_batch'][0]:.1f} ms on "
                f"{r['device_augment_ms_per_batch'][1]}"
                for r in augmented
            )
            + ".",
        ]
    checked = [r for r in results if r.get("file_check_ms_per_image") is not None]
    if checked:
        lines += [
            "",
            "Checks before a command starts (`check_files`: pairing, image headers, every mask decoded and "
            "mapped), CPU ms per image in one thread: "
            + "; ".join(f"{r['dataset']} / {r['protocol']} {r['file_check_ms_per_image']:.2f}" for r in checked)
            + ".",
        ]
    built = [r for r in results if r.get("prepare")]
    if built:
        lines += [
            "",
            f"`pat-seg prepare` of the training split ({args.prepare_workers} worker processes on "
            f"{os.cpu_count()} cores):",
            "",
            "| data set | protocol | images | wall s | ms/image | stored KiB/image | 2,975 images (Cityscapes train) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in built:
            b = r["prepare"]
            whole = f"{b['cityscapes_train_seconds'] / 60:.1f} min" if "cityscapes_train_seconds" in b else ""
            lines.append(
                f"| {r['dataset']} | {r['protocol']} | {b['images']} | {b['seconds']:.1f} | "
                f"{1000 * b['seconds_per_image']:.1f} | {b['bytes_per_image'] / 1024:.0f} | {whole} |"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate (or reuse) the fixtures, measure every protocol; the JSON-ready result."""
    with tempfile.TemporaryDirectory(prefix="pat-seg-data-") as scratch:
        root = Path(args.root) if args.root else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        wanted = [p for p in PROTOCOLS if not args.only or any(s.lower() in p.label.lower() for s in args.only)]
        paths = make_fixtures(root, args.images, args.scale, sorted({p.fixture for p in wanted}))
        generated_s = time.perf_counter() - start
        patterns = {
            "Cityscapes image": ("cityscapes", "leftImg8bit/*/*/*.png"),
            "labelIds": ("cityscapes", "gtFine/*/*/*.png"),
            "NYUv2 npy image": ("nyuv2_npy", "train/image/*.npy"),
            "Pet JPEG": ("oxford_pet", "images/*.jpg"),
            "trimap": ("oxford_pet", "annotations/trimaps/*.png"),
            "CamVid image": ("camvid", "train/*.png"),
            "CamVid mask": ("camvid", "trainannot/*.png"),
        }
        files = {
            name: mean_file_kib(paths[data], pattern) for name, (data, pattern) in patterns.items() if data in paths
        }
        results = [measure(p, paths[p.fixture], args, path) for p in wanted for path in args.paths]
    import pat_seg

    return {
        "machine": machine(),
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "pat_seg": str(Path(pat_seg.__file__).parent),
        "settings": {k: v for k, v in vars(args).items() if k not in ("markdown", "json")},
        "fixture_seconds": generated_s,
        "file_kib": files,
        "results": results,
        "markdown": markdown(results, files, args),
    }


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parse.add_argument("--root", default=None, help="where to write (or reuse) the generated data sets")
    parse.add_argument("--images", type=int, default=48, help="training images per data set")
    parse.add_argument("--scale", type=float, default=1.0, help="shrink files and protocol sizes (smoke runs)")
    parse.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parse.add_argument("--repeats", type=int, default=3, help="loader passes per setting (median reported)")
    parse.add_argument("--profile-images", type=int, default=16, help="images timed stage by stage")
    parse.add_argument("--batch-size", type=int, default=8)
    parse.add_argument(
        "--min-pass-s",
        type=float,
        default=2.0,
        help="repeat the training split so that a pass holds about this many CPU seconds of loading",
    )
    parse.add_argument(
        "--step-ms",
        type=float,
        default=DEFAULT_STEP_MS,
        help="GPU training step (DeepLabV3+ R50, 8x512x1024) to feed; default an estimate",
    )
    parse.add_argument("--only", nargs="*", default=None, help="protocols whose label contains one of these")
    parse.add_argument(
        "--paths",
        nargs="+",
        choices=["sources", "prepared"],
        default=["sources", "prepared"],
        help="read the source files, the prepared split (pat-seg prepare), or both",
    )
    parse.add_argument(
        "--prepare-workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="processes of the pat-seg prepare build (default: the usable cores)",
    )
    parse.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    parse.add_argument("--json", type=Path, default=None, help="also write every number here")
    return parse


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    result = run(args)
    print(result["markdown"])
    if args.markdown:
        args.markdown.write_text(result["markdown"] + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""CPU time of decoding one image file: ``pat_seg.data.io.read_rgb`` against torchvision's decoders.

    python benchmarks/decode.py                       # 2048x1024 and 360x480, PNG and JPEG, 15 rounds
    python benchmarks/decode.py --rounds 30 --sizes 1024x2048 360x480

``read_rgb`` opens every file with Pillow (the header and the pixel limit), decodes PNGs with Pillow
(the check that no row is missing included) and JPEGs with torchvision's libjpeg-turbo. The other rows
are the decoders alone: torchvision's ``decode_image`` (libpng, libjpeg-turbo: what ``read_rgb`` used
for every file before; its PNG decoder crashes the process on a PNG with too little image data) and
Pillow's ``Image.open(...).convert("RGB")``. ``read_label_image`` times an 8-bit label PNG of the same
size, against Pillow's decode alone (what it was before the checks). The files are generated
(``benchmarks/data.py``'s photo: a smooth colour field plus noise, whose amount sets the compressed
size, about 2.3 MB for a 2048x1024 PNG as Cityscapes' ``leftImg8bit``) and read from the page cache.
Each round times every decoder once, in a random order (each after any other: caches alike), on one
torch thread (as a loader worker runs); the table gives CPU milliseconds per file, median and minimum
over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file

from pat_seg.data.io import read_label_image, read_rgb

# benchmarks/data.py's generated photos (this folder is sys.path[0] when run as a script). By name: how
# an `import data` sorts depends on whether a data/ folder sits at the repository root.
photo = import_module("data").photo


def torchvision_rgb(path: Path) -> torch.Tensor:
    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)


def pillow_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def pillow_label(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def write_files(folder: Path, size: tuple[int, int], rng: np.random.Generator) -> dict[str, Path]:
    height, width = size
    pixels = photo(rng, height, width, noise=1.0)
    files = {"PNG": folder / f"{height}x{width}.png", "JPEG": folder / f"{height}x{width}.jpg"}
    Image.fromarray(pixels).save(files["PNG"])
    Image.fromarray(pixels).save(files["JPEG"], quality=90)
    files["label PNG"] = folder / f"{height}x{width}_label.png"
    Image.fromarray((pixels[..., 0] // 8).astype(np.uint8)).save(files["label PNG"])  # 32 smooth regions
    return files


def cpu_ms(function: Callable[[Path], object], path: Path) -> float:
    start = time.process_time()
    function(path)
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sizes", nargs="+", default=["1024x2048", "360x480"], help="HEIGHTxWIDTH")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        print("| file | decoder | CPU ms, median | min |\n|---|---|---:|---:|")
        for text in args.sizes:
            height, width = map(int, text.split("x"))
            files = write_files(Path(folder), (height, width), rng)
            cases = [
                (kind, name, function, files[kind])
                for kind in ("PNG", "JPEG")
                for name, function in (
                    ("read_rgb", read_rgb),
                    ("torchvision decode_image", torchvision_rgb),
                    ("Pillow convert('RGB')", pillow_rgb),
                )
            ]
            cases.append(("label PNG", "read_label_image", read_label_image, files["label PNG"]))
            cases.append(("label PNG", "Pillow np.asarray", pillow_label, files["label PNG"]))
            for _, _, function, path in cases:  # warm up: the page cache, the libraries' first calls
                function(path)
            times: list[list[float]] = [[] for _ in cases]
            for _ in range(args.rounds):
                for index in rng.permutation(len(cases)):
                    times[index].append(cpu_ms(cases[index][2], cases[index][3]))
            for (kind, name, _, path), measured in zip(cases, times):
                size_kib = path.stat().st_size / 1024
                print(
                    f"| {height}x{width} {kind} ({size_kib:.0f} KiB) | {name} | "
                    f"{statistics.median(measured):.2f} | {min(measured):.2f} |"
                )


if __name__ == "__main__":
    main()

"""No image file crashes, hangs or exhausts pat-seg: each hostile file is an error naming it.

The files (tests/hostile_images.py): a PNG with too little image data (torchvision's libpng decoder
segfaults on it), a 50 KB PNG that decodes to 400 million pixels, a header claiming 2**31-1 pixels a
side, an empty file, a text file named .png. Through the readers in a child process (a crash would be
its exit status, not the end of the test run), and through the console script: ``predict`` skips,
names and counts each; ``fit`` and ``prepare`` on a folder data set stop with exit 2 naming the file;
a prepare worker that dies stops the build instead of leaving it waiting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_images import HOSTILE, HUGE_SIDE, PILLOW_LIMIT, bomb_png, expected_error, hostile_files
from PIL import Image
from test_data_folder import SEGNET, H, W, run_config, write_segnet
from test_run_safety import REPO, pat_seg, short_error
from torch.utils.data import DataLoader, Dataset

from pat_seg.cli.errors import without_worker_traceback
from pat_seg.data import SyntheticLongTailDataModule
from pat_seg.data.io import image_size, read_label_image, read_rgb
from pat_seg.exceptions import ConfigurationError

CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
CHILD_ENV.pop("PAT_SEG_MAX_IMAGE_PIXELS", None)

READ_EACH = """
import json, resource, sys
from pathlib import Path
from pat_seg.data.io import read_label_image, read_rgb
from pat_seg.exceptions import ConfigurationError
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after the imports: what reading adds is ours
errors = {}
for path in map(Path, sys.argv[1:]):
    for reader in (read_rgb, read_label_image):
        try:
            reader(path)
            errors[f"{path.name} {reader.__name__}"] = "read"
        except ConfigurationError as error:
            errors[f"{path.name} {reader.__name__}"] = str(error)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"errors": errors, "peak_rss_kib": peak, "growth_kib": peak - baseline}))
"""


def write_hostile(folder: Path, width: int = W, height: int = H) -> dict[str, Path]:
    """Each hostile file as ``folder/<name>.png``, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in hostile_files(width, height).items():
        paths[name] = folder / f"{name.replace(' ', '_')}.png"
        paths[name].write_bytes(data)
    return paths


def test_no_hostile_file_crashes_or_floods_a_reader(tmp_path: Path) -> None:
    paths = write_hostile(tmp_path)
    child = subprocess.run(
        [sys.executable, "-c", READ_EACH, *map(str, paths.values())],
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]  # -11: a decoder segfaulted
    result = json.loads(child.stdout)
    for name, path in paths.items():
        assert expected_error(name, path, H) in result["errors"][f"{path.name} read_rgb"]
        assert expected_error(name, path, H, "label image") in result["errors"][f"{path.name} read_label_image"]
    # The bomb is refused from its header: decoding it would add 400 MB (grey) or 1.2 GB (RGB) to the
    # process (whose imports alone, torch's, take 0.7-1 GiB and vary with what pat_seg imports).
    assert result["growth_kib"] < 256 * 2**10, result


def test_the_pixel_limit_is_inclusive_and_set_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)  # 192 pixels
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")
    monkeypatch.setenv("PAT_SEG_MAX_IMAGE_PIXELS", "192")
    assert torch.equal(read_rgb(tmp_path / "rgb.png"), torch.from_numpy(pixels).permute(2, 0, 1))
    assert np.array_equal(read_label_image(tmp_path / "grey.png"), pixels[..., 0])
    monkeypatch.setenv("PAT_SEG_MAX_IMAGE_PIXELS", "191")
    for reader, kind, name in ((read_rgb, "image", "rgb.png"), (read_label_image, "label image", "grey.png")):
        with pytest.raises(ConfigurationError) as refused:
            reader(tmp_path / name)
        assert f"{kind} {tmp_path / name} is 16x12 (192 pixels), more than the 191 pixels" in str(refused.value)
    assert Image.MAX_IMAGE_PIXELS == PILLOW_LIMIT  # Pillow's own guard is back as it was


def test_a_raised_limit_is_not_overruled_by_pillows_own_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow refuses more than twice its limit (179 million pixels) when it opens a file; a limit raised
    # above that must let the header through.
    (tmp_path / "big.png").write_bytes(bomb_png(side=20000))
    with pytest.raises(ConfigurationError, match="more than the 89,478,485 pixels"):
        image_size(tmp_path / "big.png")
    monkeypatch.setenv("PAT_SEG_MAX_IMAGE_PIXELS", str(20000 * 20000))
    assert image_size(tmp_path / "big.png") == (20000, 20000)
    (tmp_path / "huge.png").write_bytes(hostile_files(1, 1)["huge header"])
    with pytest.raises(ConfigurationError, match=f"is {HUGE_SIDE}x{HUGE_SIDE}"):
        image_size(tmp_path / "huge.png")


@pytest.mark.parametrize("value", ["many", "0", "-3", "1e9", "2.5"])
def test_a_bad_pixel_limit_is_refused_by_name(value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    monkeypatch.setenv("PAT_SEG_MAX_IMAGE_PIXELS", value)
    message = f"PAT_SEG_MAX_IMAGE_PIXELS={value!r}: expected a whole number of pixels >= 1"
    with pytest.raises(ConfigurationError, match=message):
        read_rgb(tmp_path / "x.png")
    with pytest.raises(ConfigurationError, match=message):  # before any work, not as each image's error
        SyntheticLongTailDataModule()


class Unreadable(Dataset):
    def __init__(self, path: Path) -> None:
        self.path = path

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> None:
        raise ConfigurationError(f"cannot read image {self.path}: broken data stream\n(second line)")


def test_a_loader_workers_error_is_shown_by_its_own_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as wrapped:
        next(iter(DataLoader(Unreadable(tmp_path / "x.png"), num_workers=1)))
    assert "Traceback" in str(wrapped.value)  # torch passes the worker's traceback as the message
    own = f"cannot read image {tmp_path / 'x.png'}: broken data stream\n(second line)"
    assert without_worker_traceback(str(wrapped.value)) == own
    assert without_worker_traceback(f"Data, training split: {wrapped.value}") == f"Data, training split: {own}"
    assert without_worker_traceback(own) == own


DEAD_WORKER = """
import os, signal, sys
from test_data_folder import SEGNET, make
from pat_seg.cli.prepare import prepare
from pat_seg.data.folder import FolderSamples

parent, load = os.getpid(), FolderSamples.load
def load_or_die(self, index):
    if os.getpid() != parent and index == 3:  # a worker process dies at sample 3, as a segfault would end it
        os.kill(os.getpid(), signal.SIGKILL)
    return load(self, index)
FolderSamples.load = load_or_die
prepare(make(sys.argv[1], **SEGNET, void_values=[3]), ["train"], workers=2)
"""


def test_a_dead_prepare_worker_stops_the_build_instead_of_hanging(tmp_path: Path) -> None:
    write_segnet(tmp_path, [0, 1, 2, 3])
    child = subprocess.run(
        [sys.executable, "-c", DEAD_WORKER, str(tmp_path)], env=CHILD_ENV, capture_output=True, text=True, timeout=180
    )
    assert child.returncode == 1, child.stderr[-3000:]
    assert (
        "RunFailure: a worker process died while preparing the 'train' split of SegmentationFolderDataModule, after"
    ) in child.stderr
    prepared = tmp_path / ".pat_seg" / "prepared"
    assert not list(prepared.rglob("manifest.json")) and not list(prepared.rglob(".building-*"))


# --- through the console script ----------------------------------------------------------------------------
@pytest.mark.slow
def test_predict_skips_names_and_counts_every_hostile_file(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    paths = write_hostile(photos)
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(photos / "good.png")
    tiny = ["--model.model.init_args.base_channels=4", "--model.model.init_args.depth=1"]
    result = pat_seg(
        "predict", "--data=ImageFolderDataModule", f"--data.root={photos}", "--data.num_classes=3", *tiny, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name, path in paths.items():
        assert expected_error(name, path, H) in result.stderr, (name, result.stderr[-3000:])
    folder = tmp_path / "lightning_logs" / "default" / "version_0" / "predictions_photos"
    assert f"wrote 1 label maps to {folder / 'labels'}; skipped 5 unreadable image(s)" in result.stderr
    assert sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.png")) == ["labels/good.png"]


def hostile_data_set(root: Path, name: str) -> Path:
    """A SegNet-layout folder data set whose training image 3 (of 6) is hostile file ``name``; its path."""
    write_segnet(root, [0, 1, 2, 3])
    image = root / "train" / "train_003.png"
    image.write_bytes(hostile_files(W, H)[name])
    return image


@pytest.mark.slow
@pytest.mark.parametrize("name", HOSTILE)
def test_fit_on_a_hostile_image_stops_with_its_name(tmp_path: Path, name: str) -> None:
    image = hostile_data_set(tmp_path / "data", name)
    config = run_config(tmp_path / "run", tmp_path / "data", {**SEGNET, "void_values": [3]})
    result = pat_seg("fit", "--config", str(config), cwd=tmp_path / "run")
    assert result.returncode == 2, result.stderr[-3000:]
    # A file whose header is sound is decoded first in training, after Lightning's start-up lines.
    short_error(result, expected_error(name, image, H), after_log=name == "truncated data")
    if name != "truncated data":  # refused by the file check from its header: before the run folder
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["folder.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("name", HOSTILE)
def test_prepare_on_a_hostile_image_stops_with_its_name(tmp_path: Path, name: str) -> None:
    image = hostile_data_set(tmp_path / "data", name)
    config = run_config(tmp_path / "run", tmp_path / "data", {**SEGNET, "void_values": [3]})
    # Two workers: sample 3 is decoded in a worker process. The timeout turns a hang into a failure.
    result = pat_seg("prepare", "--config", str(config), "--workers", "2", cwd=tmp_path / "run", timeout=240)
    assert result.returncode == 2, result.stderr[-3000:]
    short_error(result, expected_error(name, image, H), after_log=True)  # after the progress bar
    assert not list((tmp_path / "data").rglob("manifest.json"))

"""The embedded synthetic long-tailed data: deterministic, long-tailed, not solvable by colour alone."""

import functools
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml

from pat_seg.data import SyntheticLongTailDataModule
from pat_seg.data.synthetic import (
    CAR,
    CLASS_NAMES,
    LIGHT,
    PERSON,
    POLE,
    ROAD,
    SIGN,
    THINGS,
    SyntheticLongTailDataset,
    format_class_table,
    regime_plan,
)
from pat_seg.experiments.sweep import load_sweep
from pat_seg.metrics import SegmentationMetrics

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Generate scenes on one thread: on a busy 2-core machine torch's two threads make each of these
    small tensor operations wait for the other core (measured: 0.7 ms a scene on one thread, up to
    100 ms on two under load); the values do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datamodule():
    return SyntheticLongTailDataModule(num_train=256, num_val=64, num_test=16)


def test_same_seed_same_samples_and_splits_differ(datamodule):
    other = SyntheticLongTailDataModule(num_train=256, num_val=64)
    for split in ("train", "val"):
        a, b = datamodule.dataset(split)[7], other.dataset(split)[7]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(datamodule.dataset("train")[7]["image"], datamodule.dataset("val")[7]["image"])
    reseeded = SyntheticLongTailDataModule(seed=1).dataset("train")[7]
    assert not torch.equal(reseeded["target"], datamodule.dataset("train")[7]["target"])


def test_sample_format(datamodule):
    sample = datamodule.dataset("train")[0]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["target"].shape == (64, 64) and sample["target"].dtype == torch.long
    assert datamodule.num_classes == len(datamodule.class_names) == 9


def test_class_counts_are_training_pixel_counts(datamodule):
    expected = torch.zeros(datamodule.num_classes, dtype=torch.long)
    ignored = 0
    for i in range(len(datamodule.dataset("train"))):
        target = datamodule.dataset("train")[i]["target"]
        ignored += int((target == 255).sum())
        for c in range(datamodule.num_classes):
            expected[c] += int((target == c).sum())
    assert datamodule.class_counts == expected.tolist()
    assert ignored > 0  # some pixels carry ignore_index, as in real data sets
    assert sum(expected.tolist()) + ignored == 256 * 64 * 64


def test_long_tail_spans_three_orders_of_magnitude(datamodule):
    counts = datamodule.class_counts
    assert min(counts) > 0
    assert max(counts) / min(counts) >= 1000
    # A few stuff classes hold most pixels.
    top4 = sum(sorted(counts, reverse=True)[:4])
    assert top4 / sum(counts) > 0.9


def test_colour_alone_does_not_solve_the_task(datamodule):
    """A nearest-mean-colour pixel classifier fitted on the training split fails on the rare classes."""
    train = torch.stack([datamodule.dataset("train")[i]["image"] for i in range(256)])
    labels = torch.stack([datamodule.dataset("train")[i]["target"] for i in range(256)])
    colours = train.permute(0, 2, 3, 1).reshape(-1, 3)
    flat = labels.reshape(-1)
    means = torch.stack([colours[flat == c].mean(0) for c in range(datamodule.num_classes)])

    metrics = SegmentationMetrics(datamodule.num_classes, class_counts=datamodule.class_counts)
    for i in range(64):
        sample = datamodule.dataset("val")[i]
        pixels = sample["image"].permute(1, 2, 0).reshape(-1, 3)
        preds = torch.cdist(pixels, means).argmin(1).view(1, 64, 64)
        metrics.update(preds, sample["target"].unsqueeze(0))
    result = metrics.compute()
    assert result["miou_tail"] < 0.1
    assert result["miou"] < 0.3  # the trained default U-Net reaches ~0.7 (README)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_train"):
        SyntheticLongTailDataModule(num_train=0)
    with pytest.raises(ValueError, match="ignore_index 3"):
        SyntheticLongTailDataModule(ignore_index=3)


# --- the default scene is unchanged by the imbalance regimes ------------------------------------------
# Recorded before the regimes existed (commit 8be7271): the 256-image training split of the fixture,
# and pixel sums / label checksums of a few samples of the 512-image default.
DEFAULT_256_COUNTS = [265083, 291503, 271456, 180287, 20057, 9202, 4663, 1480, 162]
DEFAULT_SAMPLES = {
    ("train", 0): (7045.660458609462, 12267035),
    ("train", 1): (6476.428162544966, 30806777),
    ("train", 7): (5861.265577480197, 13717127),
    ("train", 100): (6962.320867046714, 15459117),
    ("val", 0): (6284.784205809236, 12667328),
    ("val", 100): (6173.458185851574, 12774982),
}


def test_default_scene_is_unchanged(datamodule):
    assert datamodule.class_counts == DEFAULT_256_COUNTS
    positions = torch.arange(64 * 64).view(64, 64)
    for (split, index), (pixel_sum, label_checksum) in DEFAULT_SAMPLES.items():
        sample = SyntheticLongTailDataset(512, split=split)[index]
        assert sample["image"].double().sum().item() == pytest.approx(pixel_sum, rel=1e-12)
        assert int((sample["target"] * positions).sum()) == label_checksum


# --- imbalance regimes --------------------------------------------------------------------------------
def sweep_regimes():
    """(imbalance, rarity, num_train, image_size, seed) of every run of the ablation sweep."""
    sweep = load_sweep(REPO / "configs" / "sweeps" / "synthetic_ablation.yaml")
    found = set()
    for run in sweep.runs:
        args = run.args
        found.add(
            (
                float(args["data.init_args.imbalance"]),
                args["data.init_args.rarity"],
                int(args.get("data.init_args.num_train", 512)),
                int(args.get("data.init_args.image_size", 64)),
                int(args["data.init_args.seed"]),
            )
        )
    return sorted(found)


def training_pixels_and_images(dataset, num_classes=9):
    """Pixel counts and images containing each class, counted here one sample at a time."""
    pixels = torch.zeros(num_classes, dtype=torch.long)
    images = torch.zeros(num_classes, dtype=torch.long)
    for index in range(len(dataset)):
        target = dataset[index]["target"]
        counts = torch.bincount(target[target != 255], minlength=num_classes)
        pixels += counts
        images += counts > 0
    return pixels, images


SWEEP_REGIMES = sweep_regimes()


def test_the_sweep_has_the_regimes_this_file_checks():
    regimes = {(imbalance, rarity) for imbalance, rarity, *_ in SWEEP_REGIMES}
    assert regimes == {
        (10.0, "small"),
        (100.0, "small"),
        (1000.0, "small"),
        (100.0, "infrequent"),
        (1000.0, "infrequent"),
    }
    assert {seed for *_, seed in SWEEP_REGIMES} == {0, 1, 2}


@functools.cache
def regime_counts(imbalance, rarity, num_train, image_size, seed):
    """Training pixel counts and image counts of one regime, generated once per test session."""
    dataset = SyntheticLongTailDataset(num_train, image_size, seed, "train", imbalance=imbalance, rarity=rarity)
    return training_pixels_and_images(dataset)


def check_span(imbalance, rarity, num_train, image_size, seed):
    pixels, _ = regime_counts(imbalance, rarity, num_train, image_size, seed)
    span = float(pixels.max() / pixels.min())
    assert 0.8 * imbalance <= span <= 1.2 * imbalance, (imbalance, rarity, seed, span, pixels.tolist())
    assert int(pixels.argmax()) == ROAD and int(pixels.argmin()) == LIGHT
    shares = pixels / pixels.sum()
    assert (shares[list(THINGS)].diff() < 0).all()  # car > person > pole > sign > light


@pytest.mark.parametrize(
    "regime", [r for r in SWEEP_REGIMES if r[-1] == 0], ids=lambda r: f"{r[1]}{r[0]:g}-seed{r[-1]}"
)
def test_measured_span_within_20_percent_of_the_requested(regime):
    check_span(*regime)


@pytest.mark.slow
@pytest.mark.parametrize(
    "regime", [r for r in SWEEP_REGIMES if r[-1] != 0], ids=lambda r: f"{r[1]}{r[0]:g}-seed{r[-1]}"
)
def test_measured_span_within_20_percent_for_every_seed_of_the_sweep(regime):
    check_span(*regime)


def test_small_and_infrequent_put_the_rarity_in_size_and_in_presence():
    # Same span (1000x), opposite sources: small -> in half the images, ~2 pixels; infrequent -> in
    # 1/58 of the images (1024 * a_5 / (1/64) = 17.4 images), objects of 64 pixels on average.
    small = regime_counts(1000.0, "small", 1024, 64, 0)  # the sweep's seed-0 splits, shared with the span test
    infrequent = regime_counts(1000.0, "infrequent", 1024, 64, 0)
    for cls in THINGS:  # stratified presence: 512 images of 1024, less the few a clutter patch hides
        assert 500 <= int(small[1][cls]) <= 513, CLASS_NAMES[cls]
    assert float(small[0][LIGHT] / small[1][LIGHT]) == pytest.approx(2.2, abs=0.4)
    assert 16 <= int(infrequent[1][LIGHT]) <= 19
    assert float(infrequent[0][LIGHT] / infrequent[1][LIGHT]) == pytest.approx(64, rel=0.2)
    assert 68 <= int(infrequent[1][SIGN]) <= 71  # 1024 * 0.0678 = 69.4
    # Things that would need more than every image are in all of them (and larger) instead.
    assert int(infrequent[1][CAR]) >= 1020


def beyond_pat_regimes():
    """(imbalance, rarity, num_train, image_size, seed) of every run of the beyond-PAT study."""
    sweep = load_sweep(REPO / "configs" / "sweeps" / "synthetic_beyond_pat.yaml")
    return sorted(
        {
            (
                float(run.args["data.init_args.imbalance"]),
                run.args["data.init_args.rarity"],
                int(run.args["data.init_args.num_train"]),
                64,
                int(run.args["data.init_args.seed"]),
            )
            for run in sweep.runs
        }
    )


BEYOND_PAT_REGIMES = beyond_pat_regimes()


def test_the_beyond_pat_study_has_three_regimes_and_five_seeds():
    assert {(imbalance, rarity) for imbalance, rarity, *_ in BEYOND_PAT_REGIMES} == {
        (1000.0, "small"),
        (1000.0, "infrequent"),
        (1000.0, "mixed"),
    }
    assert {seed for *_, seed in BEYOND_PAT_REGIMES} == {0, 1, 2, 3, 4}


@pytest.mark.slow
@pytest.mark.parametrize(
    "regime", [r for r in BEYOND_PAT_REGIMES if r[1] == "mixed"], ids=lambda r: f"mixed-seed{r[-1]}"
)
def test_mixed_span_within_20_percent_for_every_seed_of_the_study(regime):
    check_span(*regime)


def test_mixed_regime_puts_each_rarity_where_it_says():
    # Pole and light: 8x8 objects (64 pixels) in few images, as in "infrequent"; car, person, sign:
    # in half of the images, their size carrying the rarity, as in "small" (1024 a_k / (1/64) images
    # for the infrequent ones: light 17.4, pole 276.8).
    pixels, images = regime_counts(1000.0, "mixed", 1024, 64, 0)
    check_span(1000.0, "mixed", 1024, 64, 0)
    for cls in (CAR, PERSON, SIGN):
        assert 500 <= int(images[cls]) <= 513, CLASS_NAMES[cls]
    assert 16 <= int(images[LIGHT]) <= 19
    assert 270 <= int(images[POLE]) <= 278
    for cls in (POLE, LIGHT):
        assert float(pixels[cls] / images[cls]) == pytest.approx(64, rel=0.2), CLASS_NAMES[cls]
    assert float(pixels[SIGN] / images[SIGN]) == pytest.approx(8.7, rel=0.2)  # 1024 * 0.5 objects of 8.7 pixels


def test_mixed_class_table_as_printed():
    """The mixed regime's table at the study's size and seed 0, as the data module prints it (docs/ablation.md)."""
    module = SyntheticLongTailDataModule(num_train=1024, imbalance=1000, rarity="mixed", seed=0)
    pixels, images = regime_counts(1000.0, "mixed", 1024, 64, 0)
    assert module.class_table() == (pixels.tolist(), images.tolist())
    table = format_class_table(CLASS_NAMES, pixels.tolist(), images.tolist(), 1024, 1000.0, "mixed")
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:]}
    assert rows["light"] == ["0.0289%", "19", "1.9%"]
    assert rows["pole"] == ["0.4320%", "275", "26.9%"]
    assert rows["sign"] == ["0.1056%", "512", "50.0%"]
    assert "measured span (max share / min share) 919x" in table


def test_class_statistics_count_pixels_and_images_as_an_independent_loop():
    module = SyntheticLongTailDataModule(num_train=96, num_val=8, imbalance=100, rarity="infrequent", seed=5)
    pixels, images = training_pixels_and_images(module.dataset("train"))
    statistics = module.class_statistics
    assert statistics.pixels == pixels.tolist() and statistics.images == images.tolist()
    assert statistics.num_images == 96
    assert module.class_presence == [count / 96 for count in images.tolist()]
    assert 0 < min(images.tolist()) < 96  # the fixture has classes in some images only


def test_regime_samples_depend_only_on_seed_split_and_index():
    short = SyntheticLongTailDataset(40, 64, 3, "val", imbalance=1000, rarity="infrequent")
    long = SyntheticLongTailDataset(1024, 64, 3, "val", imbalance=1000, rarity="infrequent")
    for index in (39, 0, 17):  # any order, any split length
        assert torch.equal(short[index]["target"], long[index]["target"])
        assert torch.equal(short[index]["image"], long[index]["image"])
    other_seed = SyntheticLongTailDataset(40, 64, 4, "val", imbalance=1000, rarity="infrequent")
    assert not torch.equal(other_seed[17]["target"], long[17]["target"])


def test_regime_plan_solves_for_the_span():
    # a_k / (1 - a_k) = b R^(-k/5) prod_{j<k} (1 - a_j), b = 0.30 - 0.5/64; road keeps b prod (1 - a_j).
    for imbalance in (10.0, 100.0, 1000.0):
        plan = regime_plan(imbalance, "small", 64)
        painted = [thing.presence * thing.coverage for thing in plan]
        road = (0.30 - 0.5 / 64) * math.prod(1 - a for a in painted)
        light = painted[-1]  # painted last: nothing covers it
        assert road / light == pytest.approx(imbalance, rel=1e-12)
        sign = painted[3] * (1 - painted[4])
        assert road / sign == pytest.approx(imbalance**0.8, rel=1e-12)


def test_class_table_is_printed_once_at_fit_setup(caplog):
    module = SyntheticLongTailDataModule(num_train=64, num_val=8, imbalance=100, rarity="infrequent")
    with caplog.at_level(logging.INFO):
        module.setup("fit")
        module.setup("fit")
    tables = [record.getMessage() for record in caplog.records if "Synthetic training split" in record.getMessage()]
    assert len(tables) == 1
    table = tables[0]
    pixels, images = training_pixels_and_images(module.dataset("train"))
    assert module.class_counts == pixels.tolist()
    assert "imbalance 100x, rarity 'infrequent'" in table and "64 images" in table
    for name, count, present in zip(CLASS_NAMES, pixels.tolist(), images.tolist()):
        row = next(line for line in table.splitlines() if line.split()[0] == name)
        assert row.split()[1:3] == [f"{100 * count / int(pixels.sum()):.4f}%", str(present)]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"imbalance": 1.0}, "imbalance must be a finite number > 1 .* got 1.0"),
        ({"imbalance": float("inf")}, "got inf"),
        ({"imbalance": "100"}, "got '100'"),
        ({"imbalance": 100, "rarity": "rare"}, "rarity must be one of .* got 'rare'"),
        ({"rarity": "infrequent"}, "rarity='infrequent' needs an imbalance"),
        ({"imbalance": 10000, "rarity": "small"}, "0.23 pixels per object"),
        ({"imbalance": 1000, "rarity": "infrequent", "num_train": 128}, "2.2 of num_train=128 training images"),
    ],
)
def test_bad_regime_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticLongTailDataModule(**kwargs)


def test_regime_arguments_through_the_cli(capsys):
    """The sweep's flags parse through LightningCLI and land in the saved configuration."""
    from pat_seg.cli import cli_main

    with pytest.raises(SystemExit):
        cli_main(
            [
                "fit",
                f"--config={REPO / 'configs' / 'synthetic_pat.yaml'}",
                "--data.init_args.imbalance=100",
                "--data.init_args.rarity=infrequent",
                "--data.init_args.seed=2",
                "--print_config",
            ]
        )
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["class_path"] == "pat_seg.data.SyntheticLongTailDataModule"
    assert (data["init_args"]["imbalance"], data["init_args"]["rarity"], data["init_args"]["seed"]) == (
        100.0,
        "infrequent",
        2,
    )

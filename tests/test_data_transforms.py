"""Paired transforms: NEAREST masks, ignore padding, alignment under random scale/crop/flip, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pat_seg.data.transforms import SegmentationTransform

IGNORE = 255


def test_eval_resize_is_nearest_on_the_mask_and_keeps_values() -> None:
    label = np.array([[0, 1], [2, 3]], dtype=np.int64)
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    _, target = SegmentationTransform((6, 6), train=False)(image, label)
    # Upscaling 2 -> 6 by nearest: every label becomes a 3x3 block, no new values appear.
    expected = np.kron(label, np.ones((3, 3), dtype=np.int64))
    assert target.dtype == torch.long and torch.equal(target, torch.from_numpy(expected))


def test_downscaled_mask_samples_pixel_centres_like_the_image() -> None:
    # Width 8 -> 4: output column j covers source columns 2j, 2j+1 and samples the centre, column 2j+1.
    label = np.tile(np.arange(8, dtype=np.int64), (2, 1))
    _, target = SegmentationTransform((1, 4), train=False)(np.zeros((2, 8, 3), dtype=np.uint8), label)
    assert target.tolist() == [[1, 3, 5, 7]]


def test_eval_output_is_float_in_unit_range_and_untouched_at_protocol_size() -> None:
    image = np.array([[[0, 128, 255]]], dtype=np.uint8).repeat(4, 0).repeat(5, 1)
    out, target = SegmentationTransform((4, 5), train=False)(image, np.zeros((4, 5), dtype=np.int64))
    assert out.shape == (3, 4, 5) and out.dtype == torch.float32
    assert torch.allclose(out[:, 0, 0], torch.tensor([0.0, 128 / 255, 1.0]))
    assert target.shape == (4, 5)


def test_downscaled_training_crop_pads_mask_with_ignore_and_image_with_zero() -> None:
    torch.manual_seed(0)
    image = np.full((8, 8, 3), 200, dtype=np.uint8)
    label = np.ones((8, 8), dtype=np.int64)
    # Scale fixed at 0.5: a 4x4 picture inside an 8x8 crop, so 48 of 64 pixels are padding.
    out, target = SegmentationTransform((8, 8), train=True, ignore_index=IGNORE, scale_range=(0.5, 0.5))(image, label)
    padded = target == IGNORE
    assert int(padded.sum()) == 48 and int((target == 1).sum()) == 16
    assert torch.all(out[:, padded] == 0) and torch.allclose(out[:, ~padded], torch.tensor(200 / 255))


def _image_coding_labels(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric block label map and an image whose red channel is 40 * label: mask drawn from image."""
    blocks = rng.integers(0, 5, size=(6, 8))
    label = np.kron(blocks, np.ones((16, 16), dtype=np.int64))  # 96 x 128
    image = np.zeros((*label.shape, 3), dtype=np.uint8)
    image[..., 0] = 40 * label
    image[..., 1] = rng.integers(0, 255, size=label.shape)  # noise elsewhere must not matter
    return image, label


def test_random_scale_crop_flip_keep_image_and_mask_aligned() -> None:
    rng = np.random.default_rng(0)
    transform = SegmentationTransform((64, 96), train=True, ignore_index=IGNORE, scale_range=(0.5, 2.0))
    torch.manual_seed(1)
    for _ in range(20):
        image, label = _image_coding_labels(rng)
        out, target = transform(image, label)
        valid = target != IGNORE
        decoded = torch.round(out[0] * 255 / 40).long()
        # Bilinear resampling blends the image at block edges only; inside blocks the code is exact.
        agreement = (decoded[valid] == target[valid]).float().mean()
        assert agreement > 0.8, f"image and mask misaligned: {agreement:.2f} agreement"
        # The check can fail: the same output with the mask flipped alone agrees far less.
        flipped = target.flip(-1)
        both = valid & (flipped != IGNORE)
        assert (decoded[both] == flipped[both]).float().mean() < 0.6


def test_uint8_mask_is_padded_with_an_ignore_index_outside_a_byte() -> None:
    torch.manual_seed(0)
    label = np.full((8, 8), 2, dtype=np.uint8)
    _, target = SegmentationTransform((8, 8), train=True, ignore_index=-1, scale_range=(0.5, 0.5))(
        np.zeros((8, 8, 3), dtype=np.uint8), label
    )
    # 48 padded pixels hold -1 itself (a uint8 mask would wrap it to 255), the 16 others the label.
    assert target.dtype == torch.long and int((target == -1).sum()) == 48 and int((target == 2).sum()) == 16


def test_tensor_image_and_uint8_label_give_what_numpy_and_int64_give() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(24, 20, 3), dtype=np.uint8)
    label = rng.integers(0, 5, size=(24, 20))
    transform = SegmentationTransform((12, 10), train=True, ignore_index=IGNORE, scale_range=(0.7, 1.6))
    for seed in range(5):
        torch.manual_seed(seed)
        expected = transform(image, label.astype(np.int64))
        torch.manual_seed(seed)
        # [3, H, W] as read_rgb returns it, and the label as LabelTable holds it.
        out = transform(torch.from_numpy(image).permute(2, 0, 1).contiguous(), label.astype(np.uint8))
        assert torch.equal(out[1], expected[1]) and out[1].dtype == torch.long
        torch.testing.assert_close(out[0], expected[0], atol=1 / 255, rtol=0)


def test_augmentation_is_reproducible_under_the_same_seed_and_varies_otherwise() -> None:
    image, label = _image_coding_labels(np.random.default_rng(3))
    transform = SegmentationTransform((32, 48), train=True)

    def run(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [transform(image, label)[1] for _ in range(3)]

    first, again, other = run(5), run(5), run(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("size", [(0, 4), (4,), (2.5, 4)])
def test_bad_size_is_refused(size: tuple) -> None:
    with pytest.raises(ValueError, match="size must be"):
        SegmentationTransform(size, train=False)  # type: ignore[arg-type]


def test_bad_scale_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"scale_range .*\(2\.0, 1\.0\)"):
        SegmentationTransform((4, 4), train=True, scale_range=(2.0, 1.0))

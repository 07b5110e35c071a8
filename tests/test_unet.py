"""UNet: output size for any input size, and the paper's parameter count."""

import pytest
import torch

from pat_seg.models import UNet


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 3, 75, 101), (2, 1, 17, 33)])
def test_logits_at_input_resolution(shape):
    model = UNet(num_classes=5, in_channels=shape[1], base_channels=8, depth=4)
    image = torch.randn(shape)
    logits = model(image)
    assert logits.shape == (shape[0], 5, *shape[2:])
    logits.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_parameter_count_matches_paper_unet():
    # Independent count of the classic U-Net (64 base channels, 4 pools, transposed-conv up-sampling,
    # BatchNorm after every 3x3 conv): the paper's "~31M".
    def double_conv(cin, cout):
        return (cin * cout * 9 + 2 * cout) + (cout * cout * 9 + 2 * cout)

    widths = [64, 128, 256, 512, 1024]
    total = double_conv(3, 64) + sum(double_conv(widths[i], widths[i + 1]) for i in range(4))
    total += sum(widths[i + 1] * widths[i] * 4 + widths[i] + double_conv(2 * widths[i], widths[i]) for i in range(4))
    total += 64 * 2 + 2
    model = UNet(num_classes=2, base_channels=64, depth=4)
    assert sum(p.numel() for p in model.parameters()) == total
    assert 30.5e6 < total < 31.5e6


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 0}, {"num_classes": 3, "depth": 0}, {"num_classes": 3, "base_channels": 0}]
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        UNet(**kwargs)

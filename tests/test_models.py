"""The paper's architectures: shapes at any size, gradients, and structure checked against the papers."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download in tests

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from pat_seg.exceptions import ConfigurationError
from pat_seg.losses import CrossEntropyLoss
from pat_seg.models import AttentionUNet, DeepLabV3, DeepLabV3Plus, SegNet, UNet, UNetPlusPlus
from pat_seg.models.attention_unet import AttentionGate
from pat_seg.models.base import min_input_size
from pat_seg.module import SegmentationModule

# Small widths keep every model to a fraction of a second on a CPU.
SMALL_MODELS = {
    "segnet": lambda: SegNet(5, base_channels=4),
    "unet": lambda: UNet(5, base_channels=4, depth=3),
    "attention_unet": lambda: AttentionUNet(5, base_channels=4, depth=3),
    "unet_plus_plus": lambda: UNetPlusPlus(5, base_channels=4, depth=3),
    "unet_plus_plus_ds": lambda: UNetPlusPlus(5, base_channels=4, depth=3, deep_supervision=True),
    "deeplabv3_os16": lambda: DeepLabV3(5, backbone="resnet18", output_stride=16),
    "deeplabv3_os8": lambda: DeepLabV3(5, backbone="resnet18", output_stride=8),
    "deeplabv3plus_os16": lambda: DeepLabV3Plus(5, backbone="resnet18", output_stride=16),
    "deeplabv3plus_os8": lambda: DeepLabV3Plus(5, backbone="resnet18", output_stride=8),
}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_finite_grads(model: nn.Module) -> None:
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"


# Batch 1 runs in eval mode: in training, BatchNorm over a single image's 1x1 pooled map (DeepLab's
# image-pooling branch) has one value per channel and cannot normalise. Batch 2 runs in train mode,
# so both BatchNorm paths are covered. Gradients flow in both modes.
@pytest.mark.parametrize("shape, train", [((1, 3, 75, 101), False), ((2, 3, 64, 64), True)])
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n.endswith("os8") else n for n in SMALL_MODELS]
)
def test_any_size_gives_logits_and_finite_grads(name: str, shape: tuple[int, ...], train: bool) -> None:
    torch.manual_seed(0)
    model = SMALL_MODELS[name]().train(train)
    logits = model(torch.randn(shape))
    assert logits.shape == (shape[0], 5, shape[2], shape[3])
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert_finite_grads(model)


# The smallest side each network declares, worked out from its pooling: 5 VGG stages; 2**depth.
DECLARED_MINIMUM = {"segnet": 32, "unet": 8, "attention_unet": 8, "unet_plus_plus": 8, "unet_plus_plus_ds": 8}


@pytest.mark.parametrize("name", list(DECLARED_MINIMUM))
def test_the_declared_smallest_input_is_the_smallest_the_network_takes(name: str) -> None:
    model, smallest = SMALL_MODELS[name]().eval(), DECLARED_MINIMUM[name]
    assert min_input_size(model) == smallest
    assert model(torch.zeros(1, 3, smallest, smallest + 3)).shape[-2:] == (smallest, smallest + 3)
    with pytest.raises(RuntimeError):  # one pixel less on one side: the last pooling stage has no output
        model(torch.zeros(1, 3, smallest - 1, smallest + 3))
    module = SegmentationModule(model, CrossEntropyLoss(), num_classes=5)
    with pytest.raises(
        ConfigurationError,
        match=rf"needs images of at least {smallest}x{smallest} pixels.*"
        rf"got an image of {smallest - 1}x{smallest + 3}",
    ):
        module.predict_step({"image": torch.zeros(1, 3, smallest - 1, smallest + 3)}, 0)


def test_networks_without_pooling_limits_and_your_own_take_any_size() -> None:
    assert min_input_size(DeepLabV3(5, backbone="resnet18")) == 1  # its backbone pads: 1 pixel works
    assert min_input_size(nn.Conv2d(3, 5, 1)) == 1


@pytest.mark.parametrize(
    "factory",
    [
        lambda: SegNet(0),
        lambda: SegNet(3, base_channels=0),
        lambda: AttentionUNet(3, depth=0),
        lambda: UNetPlusPlus(3, in_channels=0),
        lambda: DeepLabV3(0, backbone="resnet18"),
    ],
)
def test_bad_sizes_raise(factory) -> None:
    with pytest.raises(ValueError, match="must be an integer >= 1; got 0"):
        factory()


# --- parameter counts against the papers ---------------------------------------------------------


def conv_bn(c_in: int, c_out: int) -> int:
    """Parameters of a bias-free 3x3 conv and its BatchNorm (weight and bias)."""
    return 9 * c_in * c_out + 2 * c_out


def test_segnet_is_vgg16_bn_encoder_and_mirror_decoder() -> None:
    # SegNet paper Fig. 3 / VGG-16 configuration D: the 13 encoder convs and their mirror.
    encoder = [
        (3, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 256),
        (256, 256),
        (256, 256),
        (256, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
    ]
    decoder = [
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 256),
        (256, 256),
        (256, 256),
        (256, 128),
        (128, 128),
        (128, 64),
        (64, 64),
        (64, 64),
    ]
    classes = 12  # CamVid, as in the paper's count
    expected = sum(conv_bn(a, b) for a, b in encoder + decoder) + 9 * 64 * classes + classes
    model = SegNet(classes)
    assert count(model) == expected
    convs = [m for m in model.encoders.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == encoder
    assert math.isclose(count(model), 29.4e6, rel_tol=0.01)  # the paper's 29.4M (with BN here)


def test_reference_widths_match_paper_counts() -> None:
    assert math.isclose(count(UNet(2, base_channels=64, depth=4)), 31.0e6, rel_tol=0.01)  # Ronneberger: ~31M
    assert math.isclose(count(UNetPlusPlus(2)), 9.04e6, rel_tol=0.01)  # Zhou et al. Table 2: 9.04M


def test_segnet_decoder_unpools_to_the_stored_argmax_positions() -> None:
    torch.manual_seed(0)
    model = SegNet(3, base_channels=4).eval()
    encoded, unpooled = {}, {}
    model.encoders[-1].register_forward_hook(lambda m, i, o: encoded.setdefault("x", o))
    model.decoders[0].register_forward_hook(lambda m, i, o: unpooled.setdefault("x", i[0]))
    model(torch.randn(1, 3, 45, 57))  # odd sizes at several stages
    before, after = encoded["x"], unpooled["x"]  # the last encoder output, the first decoder input
    assert after.shape == before.shape
    # Every 2x2 pooling window holds exactly its max at the max's position and zeros elsewhere.
    h, w = before.shape[-2] // 2 * 2, before.shape[-1] // 2 * 2
    windows_before = before[..., :h, :w].unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
    windows_after = after[..., :h, :w].unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
    peak = windows_before.argmax(-1, keepdim=True)
    expected = torch.zeros_like(windows_before).scatter(-1, peak, windows_before.gather(-1, peak))
    torch.testing.assert_close(windows_after, expected)
    # The row/column that the floor of odd sizes drops receives nothing.
    assert (after[..., h:, :] == 0).all() and (after[..., :, w:] == 0).all()


# --- attention gate ---------------------------------------------------------------------------------


def test_attention_gate_matches_oktay_equations_in_float64() -> None:
    torch.manual_seed(0)
    gate = AttentionGate(skip_channels=3, gate_channels=5, inter_channels=4).double()
    x, g = torch.randn(2, 3, 8, 10, dtype=torch.float64), torch.randn(2, 5, 4, 5, dtype=torch.float64)
    # W_x applied to each non-overlapping 2x2 block, W_g and psi as matrices (Oktay Eq. 1).
    blocks = x.unfold(2, 2, 2).unfold(3, 2, 2)  # [B, C, 4, 5, 2, 2]
    wx = torch.einsum("bchwij,kcij->bkhw", blocks, gate.transform_skip.weight)
    wg = (
        torch.einsum("bchw,kc->bkhw", g, gate.transform_gate.weight[..., 0, 0])
        + gate.transform_gate.bias[:, None, None]
    )
    q = torch.einsum("bkhw,k->bhw", (wx + wg).clamp_min(0), gate.psi.weight[0, :, 0, 0]) + gate.psi.bias
    alpha = 1 / (1 + torch.exp(-q[:, None]))
    alpha = F.interpolate(alpha, size=(8, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(gate(x, g), x * alpha)


def test_attention_gate_with_constant_coefficient_scales_the_skip() -> None:
    gate = AttentionGate(skip_channels=2, gate_channels=3, inter_channels=2)
    with torch.no_grad():
        gate.psi.weight.zero_()
        gate.psi.bias.fill_(math.log(3.0))  # sigmoid(log 3) = 3/4
    x = torch.randn(1, 2, 9, 7)
    torch.testing.assert_close(gate(x, torch.randn(1, 3, 4, 3)), 0.75 * x)


# --- U-Net++ --------------------------------------------------------------------------------------


def test_unet_plus_plus_nested_nodes_take_all_previous_nodes_of_their_level() -> None:
    model = UNetPlusPlus(2, base_channels=8, depth=4)
    # Zhou Eq. 1: node (i, j) concatenates j same-level nodes and one up-sampled node, each of width w_i.
    expected = {f"{i}_{j}": (j + 1) * 8 * 2**i for j in range(1, 5) for i in range(5 - j)}
    assert {key: node[0][0].in_channels for key, node in model.nodes.items()} == expected


@pytest.mark.parametrize("deep_supervision, expected", [(False, 7.0), (True, (7.0 + 1 + 2 + 3) / 4)])
def test_unet_plus_plus_returns_the_average_of_its_heads(deep_supervision: bool, expected: float) -> None:
    model = UNetPlusPlus(3, base_channels=4, depth=4, deep_supervision=deep_supervision).eval()
    with torch.no_grad():
        for k, head in enumerate(model.heads):
            head.weight.zero_()
            head.bias.fill_([7.0, 1.0, 2.0, 3.0][k])  # head k reads X[0][k+1]; its logits are its bias
    torch.testing.assert_close(model(torch.randn(1, 3, 33, 40)), torch.full((1, 3, 33, 40), expected))


# --- DeepLab --------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_stride, rates, deep_size", [(16, [6, 12, 18], 4), (8, [12, 24, 36], 8)])
@pytest.mark.parametrize("cls", [DeepLabV3, DeepLabV3Plus])
def test_deeplab_aspp_rates_and_output_stride(cls, output_stride: int, rates: list[int], deep_size: int) -> None:
    model = cls(4, backbone="resnet18", output_stride=output_stride).eval()
    dilations = [branch[0].dilation[0] for branch in model.aspp.branches[1:4]]
    assert dilations == rates  # DeepLabV3 Sec. 3.3 / 4.1
    features = model.backbone(torch.randn(1, 3, 64, 64))
    assert features[-1].shape[-2:] == (deep_size, deep_size)  # 64 / output_stride
    if cls is DeepLabV3Plus:
        assert features[0].shape[-2:] == (16, 16)  # the decoder's stride-4 features


def test_deeplab_bad_arguments_raise_before_building() -> None:
    with pytest.raises(ValueError, match="output_stride must be one of .*got 32"):
        DeepLabV3(3, backbone="resnet18", output_stride=32)
    with pytest.raises(ValueError, match="timm ResNet.*'vgg16'"):
        DeepLabV3Plus(3, backbone="vgg16")
    with pytest.raises(ValueError, match="pretrained_path='x.pth' was given with pretrained=False"):
        DeepLabV3(3, backbone="resnet18", pretrained_path="x.pth")


def test_deeplab_batch_of_one_in_training_gets_a_clear_error() -> None:
    model = DeepLabV3(3, backbone="resnet18").train()
    with pytest.raises(ValueError, match="batch of >= 2 images.*got batch size 1"):
        model(torch.randn(1, 3, 32, 32))


# --- pretrained weights: local files only ---------------------------------------------------------


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point the Hugging Face and torch hub caches at empty folders, so the user's caches are not read."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    return tmp_path


def resnet18_weights(seed: int) -> dict[str, torch.Tensor]:
    """A full timm ResNet-18 classifier state dict (including ``fc``), as a checkpoint holds."""
    torch.manual_seed(seed)
    return timm.create_model("resnet18", pretrained=False).state_dict()


def assert_backbone_holds(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    own = model.backbone.state_dict()
    assert set(own) == {k for k in weights if not k.startswith("fc.")}
    for key, value in own.items():
        torch.testing.assert_close(value, weights[key], msg=key)


@pytest.mark.parametrize("cls", [DeepLabV3, DeepLabV3Plus])
def test_pretrained_without_weights_names_the_paths_looked_at(cls, empty_caches) -> None:
    with pytest.raises(FileNotFoundError) as error:
        cls(3, backbone="resnet18", pretrained=True)
    message = str(error.value)
    assert str(empty_caches / "hf" / "models--timm--resnet18.a1_in1k" / "snapshots") in message
    assert str(empty_caches / "torch" / "checkpoints" / "resnet18_a1_0-d63eafa0.pth") in message


def test_pretrained_path_loads_a_saved_state_dict(tmp_path) -> None:
    weights = resnet18_weights(seed=1)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": weights}, path)
    assert_backbone_holds(DeepLabV3Plus(3, backbone="resnet18", pretrained=True, pretrained_path=str(path)), weights)


def test_pretrained_path_that_does_not_exist_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        DeepLabV3(3, backbone="resnet18", pretrained=True, pretrained_path=str(tmp_path / "missing.pth"))


def test_pretrained_weights_of_another_depth_are_refused(tmp_path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(ValueError, match="does not match the backbone"):
        DeepLabV3(3, backbone="resnet18", pretrained=True, pretrained_path=str(path))


def test_pretrained_from_the_torch_hub_cache_with_four_input_channels(empty_caches) -> None:
    weights = resnet18_weights(seed=2)
    checkpoint = empty_caches / "torch" / "checkpoints" / "resnet18_a1_0-d63eafa0.pth"
    checkpoint.parent.mkdir(parents=True)
    torch.save(weights, checkpoint)
    model = DeepLabV3(3, in_channels=4, backbone="resnet18", pretrained=True)
    rgb = weights["conv1.weight"]
    # timm's rule for extra channels: repeat the RGB filters cyclically, rescaled by 3 / in_channels.
    expected = torch.cat([rgb, rgb[:, :1]], dim=1) * 3 / 4
    torch.testing.assert_close(model.backbone.conv1.weight, expected)
    loaded = model.backbone.state_dict()
    for key in loaded.keys() - {"conv1.weight"}:
        torch.testing.assert_close(loaded[key], weights[key], msg=key)


def test_pretrained_from_the_hugging_face_cache(empty_caches) -> None:
    from safetensors.torch import save_file

    # The hub cache as a download leaves it: refs/main names the snapshot of the current weights; an
    # older snapshot (sorted first) stays beside it and must not be read.
    repo = empty_caches / "hf" / "models--timm--resnet18.a1_in1k"
    for commit, seed in (("0000old", 4), ("0123abc", 3)):
        (repo / "snapshots" / commit).mkdir(parents=True)
        save_file(resnet18_weights(seed), str(repo / "snapshots" / commit / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    assert_backbone_holds(DeepLabV3(3, backbone="resnet18", pretrained=True), resnet18_weights(seed=3))


# --- module switches ------------------------------------------------------------------------------


def test_channels_last_switch_converts_weights_and_images() -> None:
    module = SegmentationModule(SegNet(3, base_channels=4), CrossEntropyLoss(), num_classes=3, channels_last=True)
    module.configure_model()
    module.configure_model()  # fit then test call it twice: one hook only
    assert len(module.model._forward_pre_hooks) == 1
    assert module.model.encoders[0][0][0].weight.is_contiguous(memory_format=torch.channels_last)
    seen = {}
    module.model.encoders[0].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    image = torch.randn(2, 3, 32, 32)
    module.eval()(image)
    assert seen["x"].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(seen["x"], image)  # same values, other layout
    plain = SegmentationModule(SegNet(3, base_channels=4), CrossEntropyLoss(), num_classes=3)
    plain.configure_model()
    assert not plain.model.encoders[0][0][0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow  # inductor compiles C++ for the CPU: tens of seconds
def test_compile_switch_compiles_the_network_in_place() -> None:
    torch.manual_seed(0)
    module = SegmentationModule(
        UNet(3, base_channels=4, depth=1), CrossEntropyLoss(), num_classes=3, compile_model=True
    )
    plain = UNet(3, base_channels=4, depth=1)
    plain.load_state_dict(module.model.state_dict())
    keys = list(module.state_dict())
    module.configure_model()
    assert list(module.state_dict()) == keys  # checkpoints keep the plain network's keys
    # A hook inside the network records whether it runs inside a torch.compile trace: the compiled
    # module's forward is traced (the hook sees True), the plain network's is not.
    traced: list[bool] = []
    for network in (module.model, plain):
        network.encoders[0].register_forward_hook(lambda *_: traced.append(torch.compiler.is_compiling()))
    image = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        compiled_logits = module.eval()(image)
        assert traced == [True]
        plain_logits = plain.eval()(image)
        assert traced == [True, False]
    torch.testing.assert_close(compiled_logits, plain_logits, rtol=1e-4, atol=1e-5)

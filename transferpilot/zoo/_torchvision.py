"""torchvision backbones: ``torchvision:<name>`` with the model's DEFAULT weights."""

from __future__ import annotations

import difflib
import os

import torch
from torch import nn

from transferpilot.errors import ModelError
from transferpilot.zoo._backbone import (
    LOGITS,
    PRE_LOGITS,
    Backbone,
    DataConfig,
    FeatureLayer,
    state_dict_digest,
)
from transferpilot.zoo._registry import register_scheme


class GraphFeatures(nn.Module):
    """A torchvision feature extractor whose pooled-or-flat outputs are named like timm's."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(self.extractor(x))
        for key in (PRE_LOGITS, LOGITS):
            if out[key].ndim > 2:  # e.g. SqueezeNet's convolutional classifier
                out[key] = out[key].flatten(2).mean(-1)
        return out


def _trunk_modules(model: nn.Module) -> list[str]:
    """Module names that may hold features: top-level children, or one level down.

    Models built as ``features`` / ``avgpool`` / ``classifier`` (VGG, MobileNet,
    DenseNet, EfficientNet, ConvNeXt, RegNet) keep their stages inside one
    Sequential: with few top-level children, Sequentials are opened one level.
    """
    children = list(model.named_children())
    names: list[str] = []
    for name, child in children:
        if len(children) < 5 and isinstance(child, nn.Sequential):
            names.extend(f"{name}.{sub}" for sub, _ in child.named_children())
        else:
            names.append(name)
    return names


def _in_graph(name: str, nodes: list[str]) -> bool:
    return any(node == name or node.startswith(name + ".") for node in nodes)


def discover_layers(
    model: nn.Module, input_size: tuple[int, int, int]
) -> tuple[tuple[FeatureLayer, ...], dict[str, str], int]:
    """Find the candidate layers of a torchvision classifier by one shape probe.

    Keeps the last module at each spatial resolution (the end of each stage, as
    timm's ``feature_info`` does). Returns the layers, the extractor's
    ``return_nodes`` and the width of the penultimate features.
    """
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    train_nodes, eval_nodes = get_graph_node_names(model)
    if len(eval_nodes) < 3:
        raise ModelError("cannot trace this torchvision model's graph")
    pre_node, logit_node = eval_nodes[-2], eval_nodes[-1]
    candidates = [
        n
        for n in _trunk_modules(model)
        if _in_graph(n, eval_nodes)
        and _in_graph(n, train_nodes)
        and n not in (pre_node, logit_node)
    ]
    probe = create_feature_extractor(
        model, return_nodes={**{n: n for n in candidates}, pre_node: PRE_LOGITS}
    ).eval()
    with torch.no_grad():
        shapes = {k: tuple(v.shape) for k, v in probe(torch.zeros(1, *input_size)).items()}
    spatial = [n for n in candidates if len(shapes[n]) == 4 and shapes[n][2] > 1]
    layers: list[FeatureLayer] = []
    for i, name in enumerate(spatial):
        is_last_of_stage = i + 1 == len(spatial) or shapes[spatial[i + 1]][2] != shapes[name][2]
        if is_last_of_stage:
            reduction = max(1, round(input_size[1] / shapes[name][2]))
            layers.append(FeatureLayer(name=name, channels=shapes[name][1], reduction=reduction))
    pre_shape = shapes[PRE_LOGITS]
    return_nodes = {**{layer.name: layer.name for layer in layers}, pre_node: PRE_LOGITS}
    return_nodes[logit_node] = LOGITS
    return tuple(layers), return_nodes, int(pre_shape[1])


def _weights_help(weights: object) -> str:
    url = getattr(weights, "url", "")
    target = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return f"download {url} and save it as {target}"


@register_scheme("torchvision", "torchvision:<name>")
def torchvision_model(name: str, *, arch: str | None, pretrained: bool) -> Backbone:
    """Any torchvision classification model, with its DEFAULT ImageNet weights."""
    import torchvision

    if arch:
        raise ModelError("`arch` is only for file:<path> models")
    weights = torchvision_weights(name)
    try:
        model = torchvision.models.get_model(name, weights=weights if pretrained else None)
    except (OSError, RuntimeError) as err:
        raise ModelError(
            f"could not load the DEFAULT weights of torchvision:{name} ({err}). "
            f"To use it offline, {_weights_help(weights)}"
        ) from None
    return torchvision_backbone(
        model,
        spec=f"torchvision:{name}",
        preset=weights,
        class_names=tuple(weights.meta["categories"]),
        weights_digest=state_dict_digest(model),
        weights_source=f"torchvision {weights}" if pretrained else "random init",
    )


def torchvision_weights(name: str) -> object:
    """The DEFAULT weights enum of a torchvision model (its preprocessing and labels)."""
    import torchvision

    valid = torchvision.models.list_models(module=torchvision.models)
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=5)
        hint = f"did you mean: {', '.join(close)}" if close else f"valid: {', '.join(valid)}"
        raise ModelError(f"torchvision has no classification model {name!r}; {hint}")
    return torchvision.models.get_model_weights(name).DEFAULT


def torchvision_backbone(
    model: nn.Module,
    *,
    spec: str,
    preset: object,
    class_names: tuple[str, ...],
    weights_digest: str,
    weights_source: str,
) -> Backbone:
    """Wrap a torchvision classifier as a :class:`Backbone`; ``preset`` gives the transforms."""
    from torchvision.models.feature_extraction import create_feature_extractor

    model.eval()
    transforms = preset.transforms()
    crop, resize = int(transforms.crop_size[0]), int(transforms.resize_size[0])
    data_config = DataConfig(
        input_size=(3, crop, crop),
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        interpolation=transforms.interpolation.value,
        crop_pct=crop / resize,
    )
    layers, return_nodes, num_features = discover_layers(model, data_config.input_size)
    features = GraphFeatures(create_feature_extractor(model, return_nodes=return_nodes)).eval()
    return Backbone(
        spec=spec,
        model=model,
        features=features,
        data_config=data_config,
        layers=layers,
        num_features=num_features,
        class_names=class_names,
        weights_digest=weights_digest,
        weights_source=weights_source,
    )

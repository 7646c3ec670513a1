"""What every zoo entry answers: the network, its preprocessing, its layers, its head."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# Output names every backbone's :meth:`Backbone.features` returns besides its layers.
from transferpilot.layer_names import LOGITS, PRE_LOGITS  # noqa: F401  (re-exported by the zoo)


@dataclass(frozen=True)
class DataConfig:
    """Evaluation preprocessing, resolved from the model (timm's data-config keys)."""

    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    crop_mode: str = "center"

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }

    def transform(self) -> Callable[[Any], torch.Tensor]:
        """PIL RGB image -> normalised float tensor (3, H, W), as the model expects."""
        from timm.data import create_transform

        return create_transform(
            input_size=self.input_size,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
            is_training=False,
        )


@dataclass(frozen=True)
class FeatureLayer:
    """A candidate layer for features: its name, channels and stride (reduction)."""

    name: str
    channels: int
    reduction: int


@dataclass(frozen=True)
class Backbone:
    """A pretrained classifier with everything transferpilot needs to know about it.

    ``model`` is the full ImageNet classifier in eval mode: ``model(x)`` with
    ``x`` of shape (B, 3, H, W), normalised per ``data_config``, gives logits
    (B, len(class_names)). ``features(x)`` runs the same network once and returns
    ``{layer.name: (B, C, h, w) for layer in layers}`` plus ``"pre_logits"``
    (B, num_features), the "CNN codes" the classifier reads, and ``"logits"``.
    """

    spec: str
    model: nn.Module
    features: nn.Module
    data_config: DataConfig
    layers: tuple[FeatureLayer, ...]
    num_features: int
    class_names: tuple[str, ...]
    weights_digest: str
    weights_source: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def head(self) -> nn.Linear | None:
        """The ImageNet classifier layer (its rows are the class prototypes), if linear."""
        linears = [
            m
            for m in self.model.modules()
            if isinstance(m, nn.Linear) and m.out_features == self.num_classes
        ]
        if linears and linears[-1].in_features == self.num_features:
            return linears[-1]
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: what ``transferpilot models NAME`` prints."""
        return {
            "spec": self.spec,
            "weights_source": self.weights_source,
            "weights_digest": self.weights_digest,
            "data_config": self.data_config.as_dict(),
            "layers": [vars(layer) for layer in self.layers],
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            **self.extra,
        }


def state_dict_digest(model: nn.Module) -> str:
    """sha256 over a model's parameter and buffer names and bytes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def imagenet_class_names(num_classes: int = 1000) -> tuple[str, ...]:
    """Human-readable ImageNet-1k names (the first synonym: 'bell cote', 'daisy')."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    names = tuple(
        info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())
    )
    if num_classes == len(names):
        return names
    if num_classes == len(names) + 1:  # TF checkpoints with a background class first
        return ("background", *names)
    return tuple(f"class_{i}" for i in range(num_classes))


def _term(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


def _forms(name: str) -> list[str]:
    """A class folder's name as ImageNet might spell it: as is, then singular."""
    term = _term(name)
    forms = [term]
    if term.endswith("ies"):
        forms.append(term[:-3] + "y")
    if term.endswith("es"):
        forms.append(term[:-2])
    if term.endswith("s"):
        forms.append(term[:-1])
    return forms


def imagenet_indices(classes: Sequence[str], head: Sequence[str]) -> list[int] | None:
    """Where each of ``classes`` sits in a pretrained ImageNet-1k head whose class names
    are ``head`` — when every class names one ImageNet class by its WordNet id
    (``n01440764``) or by one of its synonyms, singular or plural ("ants" → "ant, emmet,
    pismire"), and no two classes name the same one; otherwise ``None``. A synonym that
    two ImageNet classes share ("crane") names neither."""
    from timm.data import ImageNetInfo

    names = imagenet_class_names(1000)
    offset = len(head) - len(names)
    if offset < 0 or tuple(head[offset:]) != names:
        return None  # not an ImageNet-1k head
    info = ImageNetInfo("imagenet-1k")
    lookup: dict[str, set[int]] = {}
    for i in range(len(names)):
        lookup.setdefault(info.index_to_label_name(i).lower(), set()).add(i)
        for synonym in info.index_to_description(i).split(","):
            lookup.setdefault(_term(synonym), set()).add(i)
    found = []
    for name in classes:
        hits = next((lookup[f] for f in _forms(name) if f in lookup), set())
        if len(hits) != 1:
            return None
        found.append(offset + next(iter(hits)))
    return found if len(set(found)) == len(found) else None

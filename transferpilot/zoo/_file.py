"""``file:<path>``: a user's own checkpoint for a timm or torchvision architecture.

The file is a safetensors file or a state_dict saved with ``torch.save``; it is
read with ``weights_only=True``, never unpickled. Class names come from the
safetensors metadata key ``classes`` (a JSON list) when present, else ImageNet's
for a 1000-way head, else ``class_0``, ``class_1``...
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from transferpilot.errors import ModelError
from transferpilot.io import sha256_file
from transferpilot.zoo._backbone import Backbone, imagenet_class_names
from transferpilot.zoo._registry import register_scheme


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors or ``weights_only`` torch checkpoint."""
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})  # noqa: SIM118
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(f"cannot read checkpoint {path}: {err}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelError(f"{path}: not a state_dict of tensors")
    return data, {}


def _head_size(state: dict[str, torch.Tensor]) -> int:
    matrices = [t for k, t in state.items() if k.endswith("weight") and t.ndim == 2]
    if not matrices:
        raise ModelError("the checkpoint has no linear classifier weight")
    return int(matrices[-1].shape[0])


def _class_names(meta: dict[str, str], num_classes: int) -> tuple[str, ...]:
    if "classes" in meta:
        names = tuple(json.loads(meta["classes"]))
        if len(names) != num_classes:
            raise ModelError(f"metadata lists {len(names)} classes, the head has {num_classes}")
        return names
    return imagenet_class_names(num_classes)


@register_scheme("file", "file:<path> (with arch)")
def file_model(name: str, *, arch: str | None, pretrained: bool) -> Backbone:
    """Build ``arch`` (``timm:<name>`` or ``torchvision:<name>``) and load the file into it."""
    if not arch:
        raise ModelError(f"file:{name} needs an architecture (arch), e.g. timm:resnet50")
    path = Path(name)
    state, meta = read_checkpoint(path)
    num_classes = _head_size(state)
    family, _, arch_name = arch.partition(":")
    if not arch_name:
        family, arch_name = "timm", arch
    try:
        if family == "timm":
            import timm

            from transferpilot.zoo._timm import timm_backbone

            model = timm.create_model(arch_name, pretrained=False, num_classes=num_classes)
        elif family == "torchvision":
            import torchvision

            from transferpilot.zoo._torchvision import torchvision_backbone, torchvision_weights

            preset = torchvision_weights(arch_name)
            model = torchvision.models.get_model(arch_name, weights=None, num_classes=num_classes)
        else:
            raise ModelError(f"arch must be timm:<name> or torchvision:<name>, got {arch!r}")
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError) as err:
        raise ModelError(f"{path} does not fit {arch}: {str(err).splitlines()[0]}") from None
    common = dict(
        spec=f"file:{path}",
        class_names=_class_names(meta, num_classes),
        weights_digest=sha256_file(path),
        weights_source=f"{path} ({arch})",
    )
    if family == "timm":
        return timm_backbone(model, **common)
    return torchvision_backbone(model, preset=preset, **common)

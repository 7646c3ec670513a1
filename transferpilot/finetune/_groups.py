"""Which parameters train, at what learning rate, and which BatchNorms stay in eval mode."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn


def frozen_patterns(model: nn.Module, frozen_layers: Sequence[str]) -> list[str]:
    """Regexes matching every parameter up to the end of the last of ``frozen_layers``.

    The stem and each block before that point get one anchored pattern
    (``^conv_stem\\.``, ``^blocks\\.0\\.`` ...): named groups, never slice indices.
    """
    if not frozen_layers:
        return []
    names = [n for n, _ in model.named_modules() if n]
    last = frozen_layers[-1]
    inside = [i for i, n in enumerate(names) if n == last or n.startswith(last + ".")]
    if not inside:
        raise ValueError(f"no module named {last!r} in the model")
    end = max(inside)
    units: list[str] = []
    for name in names[: end + 1]:
        # a unit is a module that ends by `end` and is not inside a unit already taken
        subtree = [j for j, n in enumerate(names) if n == name or n.startswith(name + ".")]
        if max(subtree) <= end and not any(name.startswith(u + ".") for u in units):
            units.append(name)
    with_params = [u for u in units if any(True for _ in model.get_submodule(u).parameters())]
    return [f"^{re.escape(u)}\\." for u in with_params]


def freeze(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters matching any pattern; returns their names."""
    compiled = [re.compile(p) for p in patterns]
    frozen = []
    for name, param in model.named_parameters():
        if any(c.search(name) for c in compiled):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def set_batchnorm_mode(model: nn.Module, *, train_unfrozen: bool) -> None:
    """After ``model.train()``: put BatchNorms back in eval mode (running statistics fixed).

    BatchNorms of frozen layers always; those of trained layers too unless
    ``train_unfrozen`` (their affine weight and bias still learn either way).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            frozen = bool(params) and not any(p.requires_grad for p in params)
            if frozen or not train_unfrozen:
                module.eval()


@dataclass(frozen=True)
class GroupSpec:
    """A parameter group as the optimizer will see it (for logging and tests)."""

    name: str
    lr: float
    weight_decay: float
    size: int


def param_groups(
    model: nn.Module, head_prefix: str, *, lr: float, lr_ratio: float, weight_decay: float
) -> tuple[list[dict], list[GroupSpec]]:
    """AdamW groups: the new head at ``lr``, pretrained layers at ``lr * lr_ratio``;
    no weight decay on biases and normalisation weights (1-D tensors)."""
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "head" if name.startswith(head_prefix + ".") else "pretrained"
        buckets.setdefault((part, param.ndim > 1), []).append(param)
    groups, specs = [], []
    for (part, decays), params in sorted(buckets.items()):
        group_lr = lr if part == "head" else lr * lr_ratio
        wd = weight_decay if decays else 0.0
        name = f"{part}{'' if decays else ' (no decay)'}"
        groups.append({"params": params, "lr": group_lr, "weight_decay": wd, "name": name})
        specs.append(GroupSpec(name, group_lr, wd, sum(p.numel() for p in params)))
    return groups, specs

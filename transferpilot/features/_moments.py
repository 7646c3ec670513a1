"""Per-channel activation moments at BatchNorm inputs, gathered during the one forward pass.

A BatchNorm layer's running mean and variance summarise what its input looked
like on ImageNet. Recording the same per-channel moments on a new dataset lets
the profile step measure, layer by layer, how far the dataset is from ImageNet
without ImageNet and without a second pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats


def moment_points(model: nn.Module, layer_names: list[str]) -> dict[str, str]:
    """Where each candidate layer's moments are taken: ``{layer: BatchNorm name}``.

    For a layer, the last BatchNorm at or before its end; ``"pre_logits"`` maps
    to the network's last BatchNorm (what the CNN codes are pooled from). Empty
    for models without BatchNorm (transformers, LayerNorm ConvNeXts). Several
    layers may share a BatchNorm; :func:`unique_points` lists each once.
    """
    modules = list(model.named_modules())
    norms = [(i, name) for i, (name, m) in enumerate(modules) if _is_batchnorm(m)]
    if not norms:
        return {}
    points: dict[str, str] = {}
    for layer in layer_names:
        ends = [
            i
            for i, (name, _) in enumerate(modules)
            if name == layer or name.startswith(layer + ".")
        ]
        before = [name for i, name in norms if ends and i <= max(ends)]
        if before:
            points[layer] = before[-1]
    points["pre_logits"] = norms[-1][1]
    return points


def unique_points(points: dict[str, str]) -> list[str]:
    """The distinct BatchNorm names of :func:`moment_points`, in network order."""
    return list(dict.fromkeys(points.values()))


class MomentRecorder:
    """Forward pre-hooks that keep each image's per-channel mean and mean square.

    ``with recorder.attached(model): model(x)`` then ``recorder.pop()`` gives
    ``{bn_name: (mean (B, C), mean_sq (B, C))}`` in float32 for that batch.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._batch: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _hook(self, name: str):
        def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().float()
            dims = tuple(range(2, x.ndim))
            self._batch[name] = (x.mean(dims), x.square().mean(dims))

        return record

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator[MomentRecorder]:
        handles = [
            model.get_submodule(name).register_forward_pre_hook(self._hook(name))
            for name in self.names
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def pop(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        batch, self._batch = self._batch, {}
        missing = [n for n in self.names if n not in batch]
        if missing:
            raise RuntimeError(f"BatchNorm layers not reached in the forward pass: {missing}")
        return batch


def running_stats(
    model: nn.Module, names: list[str]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """ImageNet's side: each BatchNorm's ``(running_mean, running_var)``."""
    out = {}
    for name in names:
        bn = model.get_submodule(name)
        out[name] = (bn.running_mean.detach().float().cpu(), bn.running_var.detach().float().cpu())
    return out

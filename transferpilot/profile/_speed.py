"""Measured training and inference throughput, for the compute-budget rule."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from transferpilot.zoo import Backbone


@dataclass(frozen=True)
class Throughput:
    """Images per second of a full fine-tuning step and of an inference pass, here."""

    train_images_per_s: float
    eval_images_per_s: float
    batch_size: int
    device: str


def measure_throughput(
    backbone: Backbone, device: torch.device, *, batch_size: int = 16, steps: int = 2
) -> Throughput:
    """Time ``steps`` training steps (forward, backward, SGD) and inference passes.

    Works on a copy of the network (training mode would move BatchNorm
    statistics), on random inputs at the model's resolution, after one warm-up.
    """
    model = copy.deepcopy(backbone.model).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, *backbone.data_config.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, backbone.num_classes, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    def eval_step() -> None:
        with torch.inference_mode():
            model(x)

    def rate(step, train: bool) -> float:
        model.train(train)
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch_size / (time.perf_counter() - start)

    return Throughput(rate(train_step, True), rate(eval_step, False), batch_size, str(device))

"""Measured training and inference throughput, for the compute-budget rule."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from transferpilot.profile._size import SizeProfile
    from transferpilot.zoo import Backbone


@dataclass(frozen=True)
class Throughput:
    """Images per second of a full fine-tuning step and of an inference pass, here.

    ``input_size`` is the square resolution it was measured at (``None`` in
    profiles written before it was recorded: the model's own).
    """

    train_images_per_s: float
    eval_images_per_s: float
    batch_size: int
    device: str
    input_size: int | None = None


def measure_throughput(
    backbone: Backbone,
    device: torch.device,
    *,
    batch_size: int = 16,
    steps: int = 3,
    input_size: int | None = None,
    images: SizeProfile | None = None,
) -> Throughput:
    """Time ``steps`` training steps (forward, backward, SGD) and inference passes.

    Works on a copy of the network (training mode would move BatchNorm
    statistics), on random inputs at ``input_size`` — by default the size
    fine-tuning would train ``images`` at (:func:`training_size`), else the
    model's — after one warm-up step. The rate comes from the fastest step, as
    :mod:`timeit` advises: other load on the machine only ever slows a step
    down, and it should not talk the budget rule out of fine-tuning.
    """
    import torch

    from transferpilot.profile._size import training_size

    size = backbone.data_config.input_size[1]
    if input_size:
        size = input_size
    elif images is not None:
        size = training_size(images, size)
    model = copy.deepcopy(backbone.model).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, size, size, device=device)
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

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def rate(step, train: bool) -> float:
        model.train(train)
        step()
        sync()
        fastest = float("inf")
        for _ in range(steps):
            start = time.perf_counter()
            step()
            sync()
            fastest = min(fastest, time.perf_counter() - start)
        return batch_size / fastest

    return Throughput(rate(train_step, True), rate(eval_step, False), batch_size, str(device), size)

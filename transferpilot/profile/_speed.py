"""Measured training and inference throughput, for the compute-budget rule.

A measurement is kept per machine (:func:`cached_throughput`): the profile, a
DVC-tracked output, must be the same for the same data on the same machine,
and a timing taken again would differ every run and re-run every later stage.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transferpilot.io import write_json
from transferpilot.profile._size import training_size

if TYPE_CHECKING:
    import torch

    from transferpilot.profile._size import SizeProfile
    from transferpilot.zoo import Backbone

log = logging.getLogger(__name__)


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


def user_cache_dir() -> Path:
    """transferpilot's per-user cache: ``$TRANSFERPILOT_CACHE``, else
    ``$XDG_CACHE_HOME/transferpilot`` (``~/.cache/transferpilot``)."""
    if os.environ.get("TRANSFERPILOT_CACHE"):
        return Path(os.environ["TRANSFERPILOT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "transferpilot"


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return cpu


def machine_fingerprint(device: torch.device) -> dict[str, str]:
    """What makes a timing of this machine valid: processor, cores, device, torch."""
    import torch

    accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "cpu": cpu_name(),
        "cores": str(os.cpu_count()),
        "device": accelerator,
        "torch": torch.__version__,
    }


def cached_throughput(
    backbone: Backbone,
    device: torch.device,
    *,
    images: SizeProfile | None = None,
    remeasure: bool = False,
    cache_dir: Path | None = None,
) -> Throughput:
    """:func:`measure_throughput`, measured once per (model, weights, resolution, machine).

    Kept as JSON under :func:`user_cache_dir` (``throughput/``); ``remeasure``
    times it again and replaces the kept value.
    """
    size = backbone.data_config.input_size[1]
    if images is not None:
        size = training_size(images, size)
    key = {
        "model": backbone.spec,
        "weights": backbone.weights_digest,
        "input_size": size,
        "machine": machine_fingerprint(device),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = (cache_dir or user_cache_dir() / "throughput") / f"{digest}.json"
    if path.is_file() and not remeasure:
        try:
            return Throughput(**json.loads(path.read_text(encoding="utf-8"))["throughput"])
        except (ValueError, KeyError, TypeError):
            log.warning("%s: unreadable throughput record, measuring again", path)
    result = measure_throughput(backbone, device, input_size=size)
    write_json(path, {"key": key, "throughput": asdict(result)})
    log.info("throughput measured at %d px: kept in %s", size, path)
    return result

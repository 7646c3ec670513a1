"""Choosing the compute device: passed in explicitly, never a global."""

from __future__ import annotations

import torch

from transferpilot.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; a named device must be available."""
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise ConfigError(
            f"device must be one of {', '.join(DEVICE_CHOICES)} or cuda:N, got {name!r}"
        )
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' asked for, but MPS is not available here")
    return torch.device(name)

"""The strategy registry: how to turn training data into a classifier, by name.

Names are those of ``params.yaml`` (``linear``, ``svm``; ``finetune`` comes
with the fine-tuning issue). A duplicate name raises; an unknown one lists the
valid names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transferpilot.config import TrainParams
from transferpilot.errors import ConfigError

StrategyFactory = Callable[[TrainParams], Any]
_STRATEGIES: dict[str, StrategyFactory] = {}


def register_strategy(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    """Register a factory ``TrainParams -> estimator`` under ``name``."""

    def deco(fn: StrategyFactory) -> StrategyFactory:
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        _STRATEGIES[name] = fn
        return fn

    return deco


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def create_strategy(name: str, params: TrainParams) -> Any:
    """A fresh, unfitted estimator for strategy ``name``."""
    if name not in _STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; valid: {', '.join(list_strategies())}")
    return _STRATEGIES[name](params)

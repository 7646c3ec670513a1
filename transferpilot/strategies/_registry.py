"""The strategy registry: how to turn training data into a classifier, by name.

Names are those of ``params.yaml`` (``linear``, ``svm``; ``finetune`` comes
with the fine-tuning issue). A duplicate name raises; an unknown one lists the
valid names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transferpilot._registry import Registry
from transferpilot.config import TrainParams
from transferpilot.errors import ConfigError

StrategyFactory = Callable[[TrainParams], Any]
STRATEGIES: Registry[StrategyFactory] = Registry("strategy", ConfigError)


def register_strategy(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    """Register a factory ``TrainParams -> estimator`` under ``name``."""
    return STRATEGIES.register(name)


def list_strategies() -> list[str]:
    return sorted(STRATEGIES.names())


def create_strategy(name: str, params: TrainParams) -> Any:
    """A fresh, unfitted estimator for strategy ``name``."""
    return STRATEGIES.get(name)(params)

"""The strategy registry and the protocol every strategy answers.

Names are those of ``params.yaml`` (``decide.strategy``): ``linear`` (softmax
regression on a layer's cached features), ``svm`` (a linear SVM on them) and
``finetune`` (the network itself). A duplicate name raises; an unknown one
lists the valid names. The train and evaluate stages and the benchmarks go
through this protocol only; none of them branches on a strategy's name.

>>> strategy = get_strategy(decision.strategy)(backbone, decision)  # doctest: +SKIP
>>> strategy.fit(table, train_rows, val_rows).save(Path("models/train"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from transferpilot._registry import Registry
from transferpilot.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from transferpilot.decide import Decision
    from transferpilot.features import FeatureTable
    from transferpilot.zoo import Backbone, DataConfig


class Strategy(Protocol):
    """A way to transfer: fitted on the rows of a feature table, saved, loaded, exported.

    ``fit`` uses the ``train`` rows to learn and the ``val`` rows only where the
    strategy selects on them (fine-tuning's early stopping); it sets
    ``classes_`` and ``summary_`` (what the train stage reports).
    """

    name: ClassVar[str]
    classes_: list[str]
    summary_: dict[str, Any]

    def __init__(self, backbone: Backbone, decision: Decision, **context: Any) -> None: ...

    def fit(self, table: FeatureTable, train: np.ndarray, val: np.ndarray) -> Strategy: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(
        cls, directory: Path, backbone: Backbone, decision: Decision, **context: Any
    ) -> Strategy: ...

    def predict_proba(self, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        """(len(rows), classes) probabilities, classes in ``classes_`` order."""
        ...

    def predictor(self) -> tuple[nn.Module, DataConfig]:
        """The module the ONNX export wraps (images in, probabilities out), and its input."""
        ...


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", ConfigError)


def register_strategy(name: str) -> Callable[[type], type]:
    """Register a :class:`Strategy` class under ``name`` (its ``name`` attribute too)."""

    def deco(cls: type) -> type:
        cls.name = name
        STRATEGIES.add(name, cls)
        return cls

    return deco


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``."""
    return STRATEGIES.get(name)


def list_strategies() -> list[str]:
    return sorted(STRATEGIES.names())

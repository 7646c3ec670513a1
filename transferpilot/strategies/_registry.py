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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Context:
    """Where a strategy runs, the same for every strategy; each reads what it needs.

    ``device``: a ``torch.device`` (None: the CPU); ``checkpoint_dir``: resumable state
    (fine-tuning); ``on_epoch``: called with each :class:`~transferpilot.finetune.EpochLog`.
    """

    device: Any = None
    checkpoint_dir: Path | None = None
    on_epoch: Callable[[Any], None] | None = None


class Strategy(Protocol):
    """A way to transfer: fitted on the rows of a feature table, saved, loaded, exported.

    ``fit`` uses the ``train`` rows to learn and the ``val`` rows only where the
    strategy selects on them (fine-tuning's early stopping); it sets
    ``classes_`` and ``summary_`` (what the train stage reports).

    What the stages ask of a strategy without naming it: ``distributed`` (it trains on
    several processes when ``train.nproc_per_node`` or ``train.nnodes`` ask),
    ``needs_network`` (``False``: it predicts from cached features alone, so the evaluate
    stage builds no network, picks no device and imports no PyTorch for it),
    ``probability_note`` (a sentence the report prints under its metrics; empty: none)
    and :meth:`curves` (per-epoch curves it saved; empty: none).
    """

    name: ClassVar[str]
    distributed: ClassVar[bool]
    needs_network: ClassVar[bool]
    probability_note: ClassVar[str]
    classes_: list[str]
    summary_: dict[str, Any]

    def __init__(self, backbone: Backbone, decision: Decision, context: Context = ...) -> None: ...

    def fit(self, table: FeatureTable, train: np.ndarray, val: np.ndarray) -> Strategy: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(
        cls, directory: Path, backbone: Backbone, decision: Decision, context: Context = ...
    ) -> Strategy: ...

    @classmethod
    def curves(cls, directory: Path) -> dict[str, list[float]]:
        """The per-epoch curves saved in ``directory`` (empty when it trains no epochs)."""
        ...

    def predict_proba(self, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        """(len(rows), classes) probabilities, classes in ``classes_`` order."""
        ...

    def predictor(self) -> tuple[nn.Module, DataConfig]:
        """The module the ONNX export wraps (images in, probabilities out), and its input."""
        ...

    def out_of_fold_proba(self) -> np.ndarray | None:
        """(training rows, classes) probabilities, each from a fit that did not see the row
        (its cross-validation), in ``classes_`` order; ``None`` when it has none."""
        ...


class Defaults:
    """The protocol's hooks as most strategies answer them: one process, the network at
    hand, no note, no curves."""

    distributed: ClassVar[bool] = False
    needs_network: ClassVar[bool] = True
    probability_note: ClassVar[str] = ""

    @classmethod
    def curves(cls, directory: Path) -> dict[str, list[float]]:
        return {}

    def out_of_fold_proba(self) -> np.ndarray | None:
        return None


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

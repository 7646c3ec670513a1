"""The ``finetune`` strategy: :class:`~transferpilot.finetune.Finetuner` behind the
strategy protocol. The best epoch's weights are saved as ``model.safetensors`` with
``model.json``; per-epoch curves go to ``curves.tsv`` (no timestamps, so the same run
gives the same file) for ``dvc plots``."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transferpilot.strategies._registry import register_strategy

if TYPE_CHECKING:
    from torch import nn

    from transferpilot.decide import Decision
    from transferpilot.features import FeatureTable
    from transferpilot.zoo import Backbone, DataConfig

#: Per-epoch curves, one row per epoch (``dvc plots`` reads it).
CURVES = "curves.tsv"
CURVE_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


@register_strategy("finetune")
class Finetune:
    """Fine-tune the network: LP-FT head, frozen leading layers, discriminative learning rates.

    ``context``: ``device``, ``checkpoint_dir`` (resumable state), ``on_epoch``
    (called with each :class:`~transferpilot.finetune.EpochLog`).
    """

    name = "finetune"

    def __init__(self, backbone: Backbone, decision: Decision, **context: Any) -> None:
        from transferpilot.finetune import Finetuner

        self.backbone = backbone
        self.tuner = Finetuner(
            backbone,
            decision.train,
            frozen_layers=decision.frozen_layers,
            device=context.get("device"),
            checkpoint_dir=context.get("checkpoint_dir"),
            on_epoch=context.get("on_epoch"),
        )

    def fit(self, table: FeatureTable, train: np.ndarray, val: np.ndarray) -> Finetune:
        from transferpilot.layers import PRE_LOGITS

        paths = np.asarray([r.path for r in table.records], dtype=object)
        labels = table.labels
        size = self.tuner.data_config().input_size[1]
        same_size = size == table.meta.input_size  # else the cached codes do not fit
        self.tuner.fit(
            list(paths[train]),
            list(labels[train]),
            list(paths[val]),
            list(labels[val]),
            codes=np.asarray(table.array(PRE_LOGITS))[train] if same_size else None,
        )
        result = self.tuner.result_
        self.classes_ = list(self.tuner.classes_)
        self.summary_ = {
            "val_accuracy": result.best_val_accuracy,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "frozen": self.tuner.frozen_patterns(),
            "lr_ratio": self.tuner.config.lr_ratio,
            "input_size": size,
            "head_init": self.tuner.head_init_,
            "groups": [asdict(g) for g in self.tuner.groups_],
        }
        return self

    def save(self, directory: Path) -> None:
        result = self.tuner.result_
        self.tuner.save(
            directory, {"best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy}
        )
        from transferpilot.io import atomic_open

        with atomic_open(directory / CURVES, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(CURVE_COLUMNS)
            for entry in result.history:
                writer.writerow([getattr(entry, c) for c in CURVE_COLUMNS])

    @classmethod
    def load(
        cls, directory: Path, backbone: Backbone, decision: Decision, **context: Any
    ) -> Finetune:
        from transferpilot.finetune import Finetuner

        strategy = cls.__new__(cls)
        strategy.backbone = backbone
        strategy.tuner = Finetuner.load(directory, backbone, device=context.get("device"))
        strategy.classes_ = list(strategy.tuner.classes_)
        return strategy

    def predict_proba(self, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        return self.tuner.predict_proba([table.records[i].path for i in rows])

    def predictor(self) -> tuple[nn.Module, DataConfig]:
        from transferpilot.export import NetworkClassifier

        config = self.tuner.data_config()
        return NetworkClassifier(self.tuner.model_, config), config


def read_curves(directory: Path) -> dict[str, list[float]]:
    """The per-epoch curves :meth:`Finetune.save` wrote (empty when there are none)."""
    path = directory / CURVES
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return {c: [float(r[c]) for r in rows] for c in CURVE_COLUMNS[1:]}

"""The ``finetune`` strategy: :class:`~transferpilot.finetune.Finetuner` behind the
strategy protocol. The best epoch's weights are saved as ``model.safetensors`` with
``model.json``; per-epoch curves go to ``curves.tsv`` (no timestamps, so the same run
gives the same file) for ``dvc plots``."""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from transferpilot.io import atomic_open
from transferpilot.layer_names import PRE_LOGITS
from transferpilot.sampling import held_in_split
from transferpilot.strategies._registry import Context, Defaults, register_strategy
from transferpilot.trial_plans import HELD_IN  # the share of training images held in

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from torch import nn

    from transferpilot.decide import Decision
    from transferpilot.features import FeatureTable
    from transferpilot.zoo import Backbone, DataConfig

#: Per-epoch curves, one row per epoch (``dvc plots`` reads it).
CURVES = "curves.tsv"
CURVE_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "held_in_loss",
    "held_in_accuracy",
    "lr",
)
#: The loop's per-epoch fields behind the curves' columns (its "val" is the held-in split).
_FIELDS = {"held_in_loss": "val_loss", "held_in_accuracy": "val_accuracy"}


def _rows(selection: np.ndarray) -> np.ndarray:
    """Row indices of a boolean mask (or of indices, as given)."""
    selection = np.asarray(selection)
    return np.flatnonzero(selection) if selection.dtype == bool else selection


@register_strategy("finetune")
class Finetune(Defaults):
    """Fine-tune the network: LP-FT head, frozen leading layers, discriminative learning rates.

    The epoch is chosen (early stopping, best weights kept) on a held-in split of
    :data:`HELD_IN` of the training rows, never on ``val``: the validation accuracy it
    reports is measured once, after training, like the other strategies'.

    It reads all of :class:`~transferpilot.strategies.Context`; it is the one strategy
    that trains on several processes (``distributed``) and saves per-epoch curves.
    """

    name = "finetune"
    distributed = True

    def __init__(
        self, backbone: Backbone, decision: Decision, context: Context = Context()
    ) -> None:
        from transferpilot.finetune import Finetuner

        self.backbone = backbone
        self.tuner = Finetuner(
            backbone,
            decision.train,
            frozen_layers=decision.frozen_layers,
            device=context.device,
            checkpoint_dir=context.checkpoint_dir,
            on_epoch=context.on_epoch,
        )

    def fit(self, table: FeatureTable, train: np.ndarray, val: np.ndarray) -> Finetune:

        paths = np.asarray([r.path for r in table.records], dtype=object)
        labels = table.labels
        train, val_rows = _rows(train), _rows(val)
        held = train[held_in_split(labels[train], HELD_IN, self.tuner.config.seed)]
        if not len(held):  # too few images to hold any in: select on val, and say so
            log.warning("too few training images to hold any in: the epoch is chosen on val")
            held = val_rows
        fit_rows = np.setdiff1d(train, held)
        size = self.tuner.data_config().input_size[1]
        same_size = size == table.meta.input_size  # else the cached codes do not fit
        self.tuner.fit(
            list(paths[fit_rows]),
            list(labels[fit_rows]),
            list(paths[held]),
            list(labels[held]),
            codes=np.asarray(table.array(PRE_LOGITS))[fit_rows] if same_size else None,
        )
        result = self.tuner.result_
        self.classes_ = list(self.tuner.classes_)
        val_accuracy = float("nan")
        from transferpilot.finetune._distributed import is_main

        if len(val_rows) and is_main():  # measured once, by the rank that reports
            proba = self.predict_proba(table, val_rows)
            predicted = np.asarray(self.classes_)[proba.argmax(1)]
            val_accuracy = float((predicted == labels[val_rows]).mean())
        self.summary_ = {
            "val_accuracy": val_accuracy,
            "held_in_accuracy": result.best_val_accuracy,
            "held_in_images": len(held),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "frozen": self.tuner.frozen_patterns(),
            "lr_ratio": self.tuner.config.lr_ratio,
            "input_size": size,
            "head_init": self.tuner.head_init_,
            "groups": [asdict(g) for g in self.tuner.groups_],
        }
        if self.tuner.balanced_:  # imbalanced classes: see Finetuner.fit
            self.summary_["rebalance"] = "class-balanced batches, epoch by balanced accuracy"
        return self

    def save(self, directory: Path) -> None:
        result = self.tuner.result_
        self.tuner.save(
            directory,
            {"best_epoch": result.best_epoch, "held_in_accuracy": result.best_val_accuracy},
        )

        with atomic_open(directory / CURVES, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(CURVE_COLUMNS)
            for entry in result.history:
                writer.writerow([getattr(entry, _FIELDS.get(c, c)) for c in CURVE_COLUMNS])

    @classmethod
    def load(
        cls, directory: Path, backbone: Backbone, decision: Decision, context: Context = Context()
    ) -> Finetune:
        from transferpilot.finetune import Finetuner

        strategy = cls.__new__(cls)
        strategy.backbone = backbone
        strategy.tuner = Finetuner.load(directory, backbone, device=context.device)
        strategy.classes_ = list(strategy.tuner.classes_)
        return strategy

    @classmethod
    def curves(cls, directory: Path) -> dict[str, list[float]]:
        return read_curves(directory)

    def predict_proba(self, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        return self.tuner.predict_proba([table.records[i].path for i in rows])

    def predictor(self) -> tuple[nn.Module, DataConfig]:
        from transferpilot.heads import NetworkClassifier  # defers torch

        config = self.tuner.data_config()
        return NetworkClassifier(self.tuner.model_, config), config


def read_curves(directory: Path) -> dict[str, list[float]]:
    """The per-epoch curves :meth:`Finetune.save` wrote (empty when there are none)."""
    path = directory / CURVES
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return {c: [float(r[c]) for r in rows if c in r] for c in CURVE_COLUMNS[1:]}

"""``pretrained``: the ImageNet classifier as it is, restricted to the dataset's classes.

The seed's third scenario: when every class name names an ImageNet class ("ants" and
"bees", or WordNet ids such as ``n01440764``), the pretrained head already answers the
question. Nothing is trained; only a temperature is fitted, on the training images, so
that the restricted softmax reads as a probability. Saved as JSON (no pickle): the class
order, the head's indices, the temperature and the backbone they belong to.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import softmax

from transferpilot.calibration import expected_calibration_error, fit_temperature
from transferpilot.errors import ConfigError, ModelError
from transferpilot.io import write_json
from transferpilot.layer_names import LOGITS, linear_inputs
from transferpilot.strategies._registry import Context, Defaults, register_strategy

if TYPE_CHECKING:
    from torch import nn

    from transferpilot.decide import Decision
    from transferpilot.features import FeatureTable
    from transferpilot.zoo import Backbone, DataConfig

log = logging.getLogger(__name__)


@register_strategy("pretrained")
class PretrainedHead(Defaults):
    """The pretrained head's log-probabilities of the mapped ImageNet classes, divided by a
    temperature, then a softmax over the dataset's classes."""

    name = "pretrained"
    FILE = "pretrained_head.json"

    def __init__(
        self, backbone: Backbone, decision: Decision, context: Context = Context()
    ) -> None:
        self.backbone = backbone

    def _restricted(self, table: FeatureTable, rows: np.ndarray | slice) -> np.ndarray:
        return linear_inputs(LOGITS, table.array(LOGITS))[rows][:, self.indices_]

    def fit(self, table: FeatureTable, train: np.ndarray, val: np.ndarray) -> PretrainedHead:
        from transferpilot.zoo import imagenet_indices

        labels = table.labels
        classes = np.unique(labels[train])
        indices = imagenet_indices([str(c) for c in classes], self.backbone.class_names)
        if indices is None:
            raise ConfigError(
                "decide.strategy pretrained: the class names "
                f"({', '.join(map(str, classes[:5]))}{'…' if len(classes) > 5 else ''}) do not "
                f"all name distinct ImageNet classes of {self.backbone.spec}'s head"
            )
        self.classes_ = [str(c) for c in classes]
        self.indices_ = list(indices)
        self.pool_grid_ = table.meta.pool_grid
        truth = np.searchsorted(classes, labels)
        held_in = self._restricted(table, train)
        self.temperature_ = fit_temperature(held_in, truth[train])
        accuracy = float((held_in.argmax(1) == truth[train]).mean())
        self.summary_: dict[str, Any] = {
            "imagenet_classes": dict(
                zip(self.classes_, (self.backbone.class_names[i] for i in indices), strict=True)
            ),
            "cv_accuracy": accuracy,  # on every training image: nothing was fitted on them
            "temperature": self.temperature_,
        }
        if np.any(val):
            logits = self._restricted(table, val)
            correct = logits.argmax(1) == truth[val]
            self.summary_["val_accuracy"] = float(correct.mean())
            for key, t in (("val_ece_uncalibrated", 1.0), ("val_ece", self.temperature_)):
                proba = softmax(logits / t, axis=1)
                self.summary_[key] = expected_calibration_error(proba.max(1), correct)
        log.info(
            "pretrained head on %s → %s: %.3f on the training images, temperature %.2f",
            ", ".join(self.classes_),
            ", ".join(self.summary_["imagenet_classes"].values()),
            accuracy,
            self.temperature_,
        )
        return self

    def save(self, directory: Path) -> None:
        write_json(
            Path(directory) / self.FILE,
            {
                "strategy": self.name,
                "model": self.backbone.spec,
                "weights_digest": self.backbone.weights_digest,
                "classes": self.classes_,
                "imagenet_indices": self.indices_,
                "temperature": self.temperature_,
                "pool_grid": self.pool_grid_,
            },
        )

    @classmethod
    def load(
        cls, directory: Path, backbone: Backbone, decision: Decision, context: Context = Context()
    ) -> PretrainedHead:
        path = Path(directory) / cls.FILE
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ModelError(f"{path}: cannot read the saved head ({err})") from None
        if saved.get("model") != backbone.spec:
            raise ModelError(f"{path} was made for {saved.get('model')}, not {backbone.spec}")
        strategy = cls(backbone, decision)
        strategy.classes_ = list(saved["classes"])
        strategy.indices_ = [int(i) for i in saved["imagenet_indices"]]
        strategy.temperature_ = float(saved["temperature"])
        strategy.pool_grid_ = int(saved.get("pool_grid", 1))
        return strategy

    def predict_proba(self, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        return softmax(self._restricted(table, rows) / self.temperature_, axis=1)

    def predictor(self) -> tuple[nn.Module, DataConfig]:
        import torch
        from torch import nn

        from transferpilot.heads import FeatureClassifier  # defers torch

        head = nn.Linear(len(self.backbone.class_names), len(self.classes_), bias=False)
        with torch.no_grad():
            head.weight.zero_()
            for row, column in enumerate(self.indices_):
                head.weight[row, column] = 1.0 / self.temperature_
        config = self.backbone.data_config
        module = FeatureClassifier(
            self.backbone.features, LOGITS, head, config, pool_grid=self.pool_grid_
        )
        return module, config

"""Stage ``train``: train what ``data/decision/decision.json`` decided, into ``models/train/``.

* ``linear`` / ``svm``: the estimator on the decided layer's cached features
  (train split), saved as ``head.joblib`` with its checked sidecar ``head.json``.
* ``finetune``: :class:`~transferpilot.finetune.Finetuner` with the decision's
  epochs, frozen layers and learning-rate ratio (``train`` params may override),
  the head initialised from a probe on the cached CNN codes; the best epoch's
  weights as ``model.safetensors`` + ``model.json``; per-epoch curves logged with
  DVCLive in ``live/``. Resumable checkpoints live in ``models/checkpoints/``
  (outside DVC's outputs, so a killed run resumes where it stopped).

Either way, unless ``train.export`` is off, the result is also exported as one
self-contained ONNX predictor, ``predictor.onnx`` (see :mod:`transferpilot.export`).
Always writes ``train.json``: strategy, layer, validation accuracy, timings.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from transferpilot.config import ModelParams, TrainParams
from transferpilot.decide import Decision
from transferpilot.device import resolve_device
from transferpilot.export import FeatureClassifier, NetworkClassifier, export_onnx, linear_layer
from transferpilot.features import linear_inputs
from transferpilot.finetune import EpochLog, FinetuneConfig, Finetuner, frozen_patterns
from transferpilot.io import write_json
from transferpilot.stages import Paths, read_json, register_stage
from transferpilot.stages.extract import load as load_features
from transferpilot.strategies import create_strategy, save_classifier
from transferpilot.zoo import PRE_LOGITS, create_backbone

log = logging.getLogger(__name__)

#: The exported, self-contained predictor (ONNX) in the stage's folder.
PREDICTOR = "predictor.onnx"


def load_decision(paths: Paths) -> Decision:
    return Decision.from_dict(read_json(paths.decision / "decision.json", produced_by="decide"))


def finetune_config(params: TrainParams, decision: Decision, model: Any) -> FinetuneConfig:
    """The recipe: ``train`` params, with the decision's plan where params leave it open."""
    plan = decision.hyperparameters if decision.strategy == "finetune" else {}
    frozen = params.freeze
    if frozen is None:
        frozen = tuple(frozen_patterns(model, plan.get("frozen_layers", [])))
    return FinetuneConfig(
        epochs=params.epochs or int(plan.get("epochs", 10)),
        batch_size=params.batch_size,
        lr=params.lr,
        lr_ratio=params.lr_ratio or float(plan.get("lr_ratio", 0.1)),
        weight_decay=params.weight_decay,
        warmup_epochs=params.warmup_epochs,
        label_smoothing=params.label_smoothing,
        patience=params.patience,
        input_size=params.input_size or plan.get("input_size"),
        augment=params.augment,
        crop_scale=tuple(params.crop_scale),
        hflip=params.hflip,
        head_epochs=params.head_epochs,
        frozen=tuple(frozen),
        train_bn=params.train_bn,
        seed=params.seed,
        workers=params.workers if params.workers >= 0 else 1,
        amp=params.amp,
    )


class _Curves:
    """DVCLive per-epoch logging into ``live/`` (never touching dvc.yaml)."""

    def __init__(self, directory: Path) -> None:
        from dvclive import Live

        self.live = Live(dir=str(directory), save_dvc_exp=False, dvcyaml=False)

    def __call__(self, entry: EpochLog) -> None:
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
            self.live.log_metric(key, getattr(entry, key))
        self.live.next_step()

    def close(self) -> None:
        self.live.end()


@register_stage("train", sections=("model", "train"))
def run(model: ModelParams, params: TrainParams, paths: Paths) -> dict[str, Any]:
    decision = load_decision(paths)
    table = load_features(paths)
    records = table.records
    train = np.array([r.split == "train" for r in records])
    val = np.array([r.split == "val" for r in records])
    labels = np.array([r.label for r in records])
    out = paths.models
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    summary: dict[str, Any] = {"strategy": decision.strategy, "layer": decision.layer}
    if decision.strategy in ("linear", "svm"):
        X = linear_inputs(decision.layer, table.array(decision.layer))
        estimator = create_strategy(decision.strategy, params).fit(X[train], labels[train])
        save_classifier(
            estimator,
            out / "head.joblib",
            model=table.meta["model"],
            layer=decision.layer,
            classes=[str(c) for c in estimator.classes_],
            extra={"strategy": decision.strategy, "weights_digest": table.meta["weights_digest"]},
        )
        val_accuracy = float((estimator.predict(X[val]) == labels[val]).mean())
        summary |= {"best_C": estimator.best_C_, "cv_accuracy": estimator.cv_accuracy_}
        backbone = create_backbone(model.name, arch=model.arch)
        predictor = FeatureClassifier(
            backbone.features,
            decision.layer,
            linear_layer(estimator),
            backbone.data_config,
            pool_grid=int(table.meta.get("pool_grid", 1)),
        )
        data_config = backbone.data_config
        classes = [str(c) for c in estimator.classes_]
    else:
        backbone = create_backbone(model.name, arch=model.arch)
        config = finetune_config(params, decision, backbone.model)
        curves = _Curves(out / "live")
        tuner = Finetuner(
            backbone,
            config,
            device=resolve_device(params.device),
            checkpoint_dir=paths.checkpoints,
            on_epoch=curves,
        )
        paths_all = [r.path for r in records]
        cached_size = table.meta["data_config"]["input_size"][1]
        same_size = config.input_size in (None, cached_size)  # else the codes are recomputed
        try:
            tuner.fit(
                [p for p, t in zip(paths_all, train, strict=True) if t],
                list(labels[train]),
                [p for p, v in zip(paths_all, val, strict=True) if v],
                list(labels[val]),
                codes=np.asarray(table.array(PRE_LOGITS))[train] if same_size else None,
            )
        finally:
            curves.close()
        result = tuner.result_
        tuner.save(out, {"best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy})
        predictor = NetworkClassifier(tuner.model_, tuner.data_config())
        data_config, classes = tuner.data_config(), list(tuner.classes_)
        val_accuracy = result.best_val_accuracy
        summary |= {
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "resumed_from_epoch": None if result.resumed_from is None else result.resumed_from + 1,
            "stopped_early": result.stopped_early,
            "frozen": list(config.frozen),
            "lr_ratio": config.lr_ratio,
            "head_init": tuner.head_init_,
            "groups": [asdict(g) for g in tuner.groups_],
            "train_images_per_s": float(np.median([h.images_per_s for h in result.history]))
            if result.history
            else None,
        }
    if params.export:
        export_start = time.perf_counter()
        export_onnx(
            predictor,
            out / PREDICTOR,
            {
                "classes": classes,
                "data_config": data_config.as_dict(),
                "model": model.name,
                "strategy": decision.strategy,
                "layer": decision.layer,
            },
        )
        summary["export_seconds"] = round(time.perf_counter() - export_start, 2)
    summary |= {"val_accuracy": val_accuracy, "seconds": round(time.perf_counter() - start, 2)}
    write_json(out / "train.json", summary)
    log.info("train: %s on %s, val accuracy %.3f", decision.strategy, decision.layer, val_accuracy)
    return summary

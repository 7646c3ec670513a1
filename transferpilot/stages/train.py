"""Stage ``train``: carry out the plan in ``data/decision/decision.json``, into ``models/train/``.

The decided strategy (see :mod:`transferpilot.strategies`) is fitted on the
training rows of the feature table and saved in the folder: ``head.joblib``
(+ its checked sidecar) for ``linear``/``svm`` on the decided layer's cached
features; ``model.safetensors`` + ``model.json`` and ``curves.tsv`` for
``finetune``, whose resumable checkpoints live in ``models/checkpoints/``
(outside DVC's outputs, so a killed run resumes where it stopped). Its
settings are the decision's plan (``train`` section, completed by ``decide``).

Unless ``train.export`` is off, the result is also exported as one
self-contained ONNX predictor, ``predictor.onnx`` (see :mod:`transferpilot.export`).
Always writes ``train.json``: strategy, layer, validation accuracy — no timings,
so the same run gives the same bytes.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from transferpilot.config import ModelParams
from transferpilot.device import resolve_device
from transferpilot.export import export_onnx
from transferpilot.features import FeatureTable
from transferpilot.io import write_json
from transferpilot.stages import Paths, register_stage
from transferpilot.stages.decide import load_decision
from transferpilot.strategies import get_strategy
from transferpilot.zoo import create_backbone

log = logging.getLogger(__name__)


@register_stage("train", sections=("model",))
def run(model: ModelParams, paths: Paths) -> dict[str, Any]:
    decision = load_decision(paths)
    table = FeatureTable.open(paths.features, paths.manifest)
    split = table.split
    out = paths.models
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    backbone = create_backbone(model.name, arch=model.arch)
    strategy = get_strategy(decision.strategy)(
        backbone,
        decision,
        device=resolve_device(decision.train.device),
        checkpoint_dir=paths.checkpoints,
    )
    strategy.fit(table, split == "train", split == "val").save(out)
    if decision.train.export:
        export_start = time.perf_counter()
        module, data_config = strategy.predictor()
        export_onnx(
            module,
            paths.predictor,
            {
                "classes": strategy.classes_,
                "data_config": data_config.as_dict(),
                "model": model.name,
                "strategy": decision.strategy,
                "layer": decision.layer,
            },
        )
        log.info(
            "train: exported %s in %.1f s", paths.predictor, time.perf_counter() - export_start
        )
    summary = {"strategy": decision.strategy, "layer": decision.layer, **strategy.summary_}
    write_json(paths.train_json.path, summary)
    log.info(
        "train: %s on %s, val accuracy %.3f (%.1f s)",
        decision.strategy,
        decision.layer,
        summary["val_accuracy"],
        time.perf_counter() - start,
    )
    return summary

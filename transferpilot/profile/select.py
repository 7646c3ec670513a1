"""Measuring the candidate backbones of ``model.name: auto``: the one function the extract
stage, ``transferpilot profile`` and the benchmarks call.

Each candidate's features of a stratified sample of the training images go through the
per-image feature cache (so the chosen backbone's are not computed twice), every layer
is probed as the profile probes it (probe cache included), and the run's cost with that
backbone is estimated from the throughput measured once on this machine.

>>> ranking = rank_backbones(records, p.model, p.extract, p.profile, p.decide)  # doctest: +SKIP
>>> ranking.chosen  # doctest: +SKIP
'efficientnet_lite0'
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from transferpilot.config import AUTO, DecideParams, ExtractParams, ModelParams, ProfileParams
from transferpilot.device import resolve_device
from transferpilot.features import FeatureTable, write_table
from transferpilot.intake import Record
from transferpilot.layer_names import LOGITS, PRE_LOGITS, linear_inputs
from transferpilot.profile import cached_throughput, size_profile, stratified_sample
from transferpilot.profile._backbones import (
    BackboneRanking,
    BackboneScore,
    knn_accuracy,
    logme,
    pick_backbone,
)
from transferpilot.profile.build import probe_layers
from transferpilot.zoo import create_backbone

log = logging.getLogger(__name__)


def select_model(
    records: Sequence[Record],
    model: ModelParams,
    extract: ExtractParams,
    profile: ProfileParams,
    decide: DecideParams,
) -> tuple[ModelParams, BackboneRanking | None]:
    """``model`` itself, or with ``name: auto`` the candidate :func:`rank_backbones` picks,
    with that ranking."""
    if model.name != AUTO:
        return model, None
    ranking = rank_backbones(records, model, extract, profile, decide)
    return model.model_copy(update={"name": ranking.chosen}), ranking


def selection_sample(records: Sequence[Record], images: int, seed: int) -> list[Record]:
    """At most ``images`` training records, class proportions kept (at least 2 per class)."""
    train = [r for r in records if r.split == "train"]
    labels = np.array([r.label for r in train])
    return [train[i] for i in stratified_sample(labels, images, seed)]


def rank_backbones(
    records: Sequence[Record],
    model: ModelParams,
    extract: ExtractParams,
    profile: ProfileParams,
    decide: DecideParams,
) -> BackboneRanking:
    """Score every ``model.candidates`` backbone on a sample of ``records`` (the whole
    dataset: its size prices each run) and pick one (see
    :func:`~transferpilot.profile._backbones.pick_backbone`)."""
    start = time.perf_counter()
    sample = selection_sample(records, model.select_images, profile.seed)
    sizes = size_profile(records)
    device = resolve_device(extract.device)
    # probe every layer with one classifier: the ranking needs the best layer, not both kinds
    probing = profile.model_copy(update={"probe_second_opinion": 0})
    scores = []
    for name in model.candidates:
        began = time.perf_counter()
        backbone = create_backbone(name)
        with tempfile.TemporaryDirectory(prefix="transferpilot-select-") as tmp:
            meta, stats = write_table(backbone, sample, Path(tmp), extract, device=device)
            table = FeatureTable(sample, meta, Path(tmp))
            layers = [*meta.layer_names, PRE_LOGITS, LOGITS]
            arrays = {k: np.array(v) for k, v in table.arrays().items() if k in layers}
        labels = np.asarray(table.labels)
        probes = probe_layers(arrays, list(labels), layers, probing, join=False)
        best = max(reversed(probes), key=lambda p: p.cv_accuracy)  # ties: the later layer
        x = linear_inputs(best.layer, arrays[best.layer])
        extract_min = finetune_min = None
        if profile.measure_throughput:
            rate = cached_throughput(backbone, device, images=sizes)
            extract_min = len(records) / max(rate.eval_images_per_s, 1e-9) / 60
            per_epoch = sizes.n_train / max(rate.train_images_per_s, 1e-9)
            finetune_min = decide.finetune_epochs * per_epoch / 60
        scores.append(
            BackboneScore(
                model=name,
                layer=best.layer,
                probe_accuracy=best.cv_accuracy,
                probe_std=best.cv_std,
                folds=best.folds,
                knn_accuracy=knn_accuracy(x, labels, probing.probe_folds, probing.seed),
                logme=logme(x, labels),
                layers={p.layer: p.cv_accuracy for p in probes},
                input_size=int(backbone.data_config.input_size[1]),
                parameters=sum(p.numel() for p in backbone.model.parameters()),
                extract_minutes=extract_min,
                finetune_minutes=finetune_min,
                seconds=time.perf_counter() - began,
                images_per_s=stats.images_per_s if stats.computed else None,
            )
        )
        log.info(
            "backbone %s: probe %.3f on %s, k-NN %.3f, LogME %.3f (%.1f s)",
            name,
            best.cv_accuracy,
            best.layer,
            scores[-1].knn_accuracy,
            scores[-1].logme,
            scores[-1].seconds,
        )
    ranking = pick_backbone(scores, len(sample), decide.budget_minutes)
    ranking = replace(ranking, seconds=time.perf_counter() - start)
    log.info("%s (%.1f s)", ranking.reason, ranking.seconds)
    return ranking

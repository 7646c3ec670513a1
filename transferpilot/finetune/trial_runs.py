"""Run the fine-tuning trials that :mod:`transferpilot.trial_plans` plans (successive halving).

>>> plans, budget_s, _ = trial_plans(profile, rules, train)  # doctest: +SKIP
>>> rival = best_head(profile)  # doctest: +SKIP
>>> report = run_trials(table, backbone, plans, train, budget_s, rival=rival)  # doctest: +SKIP
>>> report.note  # doctest: +SKIP
'first rung: 1 plan(s) x 208 images x 1 epoch; not promoted: ...'
>>> choose_strategy(profile, rules, train, trials=report)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from transferpilot.config import TrainParams
from transferpilot.features import FeatureTable
from transferpilot.finetune._loop import Finetuner
from transferpilot.layer_names import PRE_LOGITS
from transferpilot.sampling import held_in_split, stratified_sample
from transferpilot.trial_plans import (
    HELD_IN,
    PROMOTED_EPOCHS,
    Plan,
    Trial,
    TrialReport,
    first_rung,
    promising,
    rung_images,
)
from transferpilot.zoo import Backbone

log = logging.getLogger(__name__)


@dataclass
class _Trainer:
    """Trains one plan on some training rows and scores it on the held-in rows."""

    table: FeatureTable
    backbone: Backbone
    settings: TrainParams
    held: np.ndarray
    device: torch.device | None

    def trial(self, plan: Plan, rows: np.ndarray, epochs: int, rung: int) -> Trial:
        table, settings, held = self.table, self.settings, self.held
        paths = np.asarray([r.path for r in table.records], dtype=object)
        labels = table.labels
        config = settings.for_strategy(
            "finetune",
            epochs=epochs,
            lr_ratio=plan.lr_ratio,
            input_size=plan.input_size,
            warmup_epochs=min(settings.warmup_epochs, 0.25 * epochs),
            patience=epochs,
        )
        tuner = Finetuner(self.backbone, config, frozen_layers=plan.frozen, device=self.device)
        start = time.perf_counter()
        same_size = plan.input_size == table.meta.input_size
        tuner.fit(
            list(paths[rows]),
            list(labels[rows]),
            list(paths[held]),
            list(labels[held]),
            codes=np.asarray(table.array(PRE_LOGITS))[rows] if same_size else None,
        )
        done = Trial(
            input_size=plan.input_size,
            rung=rung,
            images=len(rows),
            epochs=epochs,
            held_in=len(held),
            accuracy=float(tuner.result_.best_val_accuracy),
            planned_s=plan.seconds(len(rows), epochs, len(held)),
        )
        log.info(
            "trial rung %d: fine-tune at %d px, %d images x %d epoch(s): held-in %.3f "
            "(%.0f s, planned %.0f s)",
            rung,
            done.input_size,
            done.images,
            epochs,
            done.accuracy,
            time.perf_counter() - start,
            done.planned_s,
        )
        return done


def run_trials(
    table: FeatureTable,
    backbone: Backbone,
    plans: list[Plan],
    settings: TrainParams,
    budget_s: float,
    *,
    rival: float | None = None,
    device: torch.device | None = None,
) -> TrialReport:
    """Train ``plans`` briefly on the training rows of ``table``; score each on the held-in
    rows. ``settings``: the ``train`` section; ``rival``: the best head's held-in score,
    which a plan must be within reach of to be promoted. The schedule follows the
    plans' estimated costs (see :mod:`transferpilot.trial_plans`), never the clock."""
    labels = table.labels
    train_rows = np.flatnonzero(table.split == "train")
    held = train_rows[held_in_split(labels[train_rows], HELD_IN, settings.seed)]
    fit = np.setdiff1d(train_rows, held)
    classes = len(np.unique(labels[train_rows]))
    if len(held) < classes:
        return TrialReport(budget_s=budget_s, note="too few training images to hold any in")
    live, n0 = first_rung(plans, budget_s, fit=len(fit), held_in=len(held), classes=classes)
    if not live:
        return TrialReport(
            budget_s=budget_s,
            note=f"not even one epoch on half the training images fits the "
            f"{budget_s / 60:.1f} min trial budget",
        )
    trial = _Trainer(table, backbone, settings, held, device).trial
    first = fit[stratified_sample(labels[fit], n0, settings.seed)]
    trials = [trial(plan, first, 1, 0) for plan in live]
    planned = sum(t.planned_s for t in trials)
    best = max(trials, key=lambda t: t.accuracy)
    note = f"first rung: {len(live)} plan(s) x {len(first)} images x 1 epoch"
    if len(live) < len(plans):
        note += f" ({len(plans) - len(live)} plan(s) too dear for it)"
    plan = next(p for p in live if p.input_size == best.input_size)
    n1 = rung_images(
        [plan],
        budget_s - planned,
        epochs=PROMOTED_EPOCHS,
        held_in=len(held),
        available=len(fit),
    )
    if not promising(best, rival):
        note += f"; not promoted: {best.accuracy:.3f}, out of reach of the best head ({rival:.3f})"
    elif n1 < min(len(fit), 2 * len(first)):
        note += "; not promoted: the rest of the trial budget buys too little"
    else:
        second = fit[stratified_sample(labels[fit], n1, settings.seed)]
        trials.append(trial(plan, second, PROMOTED_EPOCHS, 1))
        planned += trials[-1].planned_s
        note += f"; promoted: {plan.input_size} px, {len(second)} images x {PROMOTED_EPOCHS} epochs"
    return TrialReport(
        trials=trials,
        budget_s=budget_s,
        planned_s=planned,
        note=note,
    )

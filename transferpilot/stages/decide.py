"""Stage ``decide``: turn ``data/profile/profile.json`` and the ``train`` settings into
``data/decision/decision.json``: the strategy, its reason, and the plan ``train`` runs.

Where the rule asks for fine-tuning trials (:func:`transferpilot.decide.trial_plans`),
they run here, on the training images of ``data/features``' manifest, and the
decision records them (``evidence.trials``); otherwise the stage reads the profile
alone."""

from __future__ import annotations

import logging
from typing import Any

from transferpilot.config import DecideParams, ModelParams, TrainParams
from transferpilot.decide import best_head, choose_strategy, trial_plans
from transferpilot.io import write_json
from transferpilot.profile import Profile
from transferpilot.stages import Paths, chosen_model, register_stage

log = logging.getLogger(__name__)


@register_stage("decide", sections=("model", "decide", "train"))
def run(
    model: ModelParams, params: DecideParams, train: TrainParams, paths: Paths
) -> dict[str, Any]:
    profile = Profile.from_dict(paths.profile_json.read_json())
    plans, budget_s, why_not = trial_plans(profile, params, train)
    trials = None
    if plans:
        from transferpilot.device import resolve_device
        from transferpilot.features import FeatureTable
        from transferpilot.finetune.trial_runs import run_trials
        from transferpilot.zoo import create_backbone

        model = chosen_model(model, paths)
        trials = run_trials(
            FeatureTable.open(paths.features, paths.manifest),
            create_backbone(model.name, arch=model.arch),
            plans,
            train,
            budget_s,
            rival=best_head(profile),
            device=resolve_device(train.device),
        )
    else:
        log.info("decide: fine-tuning %s", why_not)
    decision = choose_strategy(profile, params, train, trials=trials)
    write_json(paths.decision_json.path, decision.to_dict())
    log.info("decide: %s", decision.reason)
    return {"strategy": decision.strategy, "layer": decision.layer}

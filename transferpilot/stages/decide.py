"""Stage ``decide``: turn ``data/profile/profile.json`` and the ``train`` settings into
``data/decision/decision.json``: the strategy, its reason, and the plan ``train`` runs."""

from __future__ import annotations

import logging
from typing import Any

from transferpilot.config import DecideParams, TrainParams
from transferpilot.decide import Decision, choose_strategy
from transferpilot.io import write_json
from transferpilot.profile import Profile
from transferpilot.stages import Paths, register_stage

log = logging.getLogger(__name__)


def load_decision(paths: Paths) -> Decision:
    """The decide stage's ``decision.json``."""
    return Decision.from_dict(paths.decision_json.read_json())


@register_stage("decide", sections=("decide", "train"))
def run(params: DecideParams, train: TrainParams, paths: Paths) -> dict[str, Any]:
    profile = Profile.from_dict(paths.profile_json.read_json())
    decision = choose_strategy(profile, params, train)
    write_json(paths.decision_json.path, decision.to_dict())
    log.info("decide: %s", decision.reason)
    return {"strategy": decision.strategy, "layer": decision.layer}

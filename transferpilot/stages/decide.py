"""Stage ``decide``: turn ``data/profile/profile.json`` into ``data/decision/decision.json``."""

from __future__ import annotations

import logging
from typing import Any

from transferpilot.config import DecideParams
from transferpilot.decide import choose_strategy
from transferpilot.io import write_json
from transferpilot.profile import Profile
from transferpilot.stages import Paths, read_json, register_stage

log = logging.getLogger(__name__)


def load_profile(paths: Paths) -> Profile:
    return Profile.from_dict(read_json(paths.profile / "profile.json", produced_by="profile"))


@register_stage("decide", sections=("decide",))
def run(params: DecideParams, paths: Paths) -> dict[str, Any]:
    decision = choose_strategy(load_profile(paths), params)
    write_json(paths.decision / "decision.json", decision.to_dict())
    log.info("decide: %s", decision.reason)
    return decision.to_dict()

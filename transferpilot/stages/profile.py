"""Stage ``profile``: measure the dataset into ``data/profile/``.

Reads ``data/features/`` and writes ``profile.json`` (size, similarity to
ImageNet with its depth profile, per-layer probe scores, throughput measured
on this machine), ``similarity.png`` and ``probes.png``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from transferpilot.config import AUTO, ExtractParams, ModelParams, ProfileParams
from transferpilot.features import FeatureTable
from transferpilot.io import fresh_dir, write_json
from transferpilot.profile import BackboneRanking
from transferpilot.profile._plots import plot_probes, plot_similarity
from transferpilot.profile.build import build_profile
from transferpilot.stages import Paths, register_stage
from transferpilot.zoo import create_backbone

log = logging.getLogger(__name__)


@register_stage("profile", sections=("model", "extract", "profile"))
def run(
    model: ModelParams, extract: ExtractParams, params: ProfileParams, paths: Paths
) -> dict[str, Any]:
    table = FeatureTable.open(paths.features, paths.manifest)
    ranking = None
    if model.name == AUTO:
        ranking = BackboneRanking.from_dict(paths.backbones.read_json())
        model = model.model_copy(update={"name": ranking.chosen})
    backbone = create_backbone(model.name, arch=model.arch)
    profile = replace(build_profile(table, backbone, params, extract), backbones=ranking)
    with fresh_dir(paths.profile) as out:
        write_json(out / "profile.json", profile.to_dict())
        plot_similarity(profile, out / "similarity.png")
        plot_probes(profile, out / "probes.png")
    sim = profile.similarity
    log.info(
        "profile: %d images, %d classes, similarity %.2f (certainty %.2f, overlap %s); "
        "best probe %s",
        profile.size.n_images,
        profile.size.n_classes,
        sim.score,
        sim.certainty,
        "n/a" if sim.overlap is None else f"{sim.overlap:.2f}",
        max(profile.layer_probes, key=lambda p: p.cv_accuracy).layer,
    )
    return {"similarity": sim.score, "images": profile.size.n_images}

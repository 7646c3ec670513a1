"""Stage ``profile``: measure the dataset into ``data/profile/``.

Reads ``data/features/`` and writes ``profile.json`` (size, similarity to
ImageNet with its depth profile, per-layer probe scores, throughput measured
here), ``similarity.png`` and ``probes.png``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from transferpilot.config import ExtractParams, ModelParams, ProfileParams
from transferpilot.device import resolve_device
from transferpilot.features import ExtractOptions
from transferpilot.io import fresh_dir, write_json
from transferpilot.profile import (
    build_profile,
    measure_throughput,
    probe_options,
    reference_distance,
    size_profile,
)
from transferpilot.profile._plots import plot_probes, plot_similarity
from transferpilot.stages import Paths, register_stage
from transferpilot.stages.extract import load as load_features
from transferpilot.zoo import PRE_LOGITS, create_backbone

log = logging.getLogger(__name__)


@register_stage("profile", sections=("model", "extract", "profile"))
def run(
    model: ModelParams, extract: ExtractParams, params: ProfileParams, paths: Paths
) -> dict[str, Any]:
    table = load_features(paths)
    moments = table.moments()
    points: dict[str, str] = table.meta["moment_points"]
    bns = list(dict.fromkeys(points.values()))
    dataset = {bn: (moments[f"all/mean/{bn}"], moments[f"all/var/{bn}"]) for bn in bns}
    imagenet = {bn: (moments[f"imagenet/mean/{bn}"], moments[f"imagenet/var/{bn}"]) for bn in bns}
    head_file = table.root / "imagenet_head.npy"
    prototypes = np.load(head_file, allow_pickle=False) if head_file.exists() else None
    arrays = {name: table.array(name) for name in table.meta["outputs"]}

    size = size_profile(table.records)
    throughput = reference = None
    if params.measure_throughput or params.reference:
        backbone = create_backbone(model.name, arch=model.arch)
        device = resolve_device(extract.device)
        if params.measure_throughput:
            # at the resolution fine-tuning would train at, for the budget estimate
            throughput = measure_throughput(backbone, device, images=size)
        if params.reference:
            reference = reference_distance(
                backbone,
                params.reference,
                arrays[PRE_LOGITS],
                cache_root=extract.cache_dir,
                device=device,
                opts=ExtractOptions(batch_size=extract.batch_size),
            )
    profile = build_profile(
        table.records,
        arrays,
        points,
        dataset,
        imagenet,
        prototypes,
        model=table.meta["model"],
        layers=[ly["name"] for ly in table.meta["layers"]],
        probe=probe_options(params),
        throughput=throughput,
        reference=reference,
        size=size,
        input_size=int(table.meta["data_config"]["input_size"][1]),
    )
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

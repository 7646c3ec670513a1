"""Profile a folder and decide, outside the pipeline: what ``transferpilot profile`` runs.

The same library calls, with the same settings, as the ``prepare``, ``extract``,
``profile`` and ``decide`` stages: intake, the feature table (of a stratified
sample, when asked; written to a temporary folder, the per-image cache shared
with the pipeline), :func:`~transferpilot.profile.build.build_profile`, the decision.

>>> assessment = assess_folder(Path("my_images"), Params())  # doctest: +SKIP
>>> assessment.decision.strategy  # doctest: +SKIP
'svm'
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from transferpilot.config import Params
from transferpilot.decide import Decision, choose_strategy
from transferpilot.device import resolve_device
from transferpilot.errors import DataError
from transferpilot.features import FeatureTable, write_table
from transferpilot.intake import Finding, prepare_dataset
from transferpilot.profile import Profile, size_profile, stratified_sample
from transferpilot.profile.build import build_profile
from transferpilot.profile.select import select_model
from transferpilot.zoo import create_backbone


@dataclass(frozen=True)
class Assessment:
    profile: Profile
    decision: Decision
    #: files left out or changed, and why: the ``prepare`` stage's findings
    findings: tuple[Finding, ...] = ()

    def summary(self) -> dict[str, Any]:
        """The flat JSON of ``transferpilot profile --json``."""
        profile, decision = self.profile, self.decision
        size, sim = profile.size, profile.similarity
        gaps = {g.layer: g for g in sim.depth}
        layers = []
        for name in profile.layers:
            probe, gap = profile.probe(name), gaps.get(name)
            layers.append(
                {
                    "layer": name,
                    "probe_accuracy": probe.cv_accuracy if probe else None,
                    "kl": gap.kl_mean if gap else None,
                    "overlap": gap.overlap if gap else None,
                }
            )
        return {
            "model": profile.model,
            "n_images": size.n_images,
            "n_classes": size.n_classes,
            "images_per_class": size.images_per_class,
            "imbalance": size.imbalance,
            "size": decision.size,
            "similarity": sim.score,
            "domain": decision.domain,
            "quadrant": decision.quadrant,
            "strategy": decision.strategy,
            "layer": decision.layer,
            "frozen_layers": decision.frozen_layers,
            "train": decision.train.model_dump(mode="json"),
            "reason": decision.reason,
            "skipped": [
                {"file": f.path, "reason": f.reason, "kind": f.kind}
                for f in self.findings
                if f.action == "skipped"
            ],
            "candidates": [asdict(c) for c in decision.candidates],
            "baseline_score": decision.baseline_score,
            "transfer_gain": decision.transfer_gain,
            "similarity_parts": {
                "certainty": sim.certainty,
                "overlap": sim.overlap,
                "confidence": sim.head.confidence,
                "prototype_cosine": sim.head.prototype_cosine,
                "formula": sim.formula,
                "note": sim.note,
            },
            "layers": layers,
            "throughput": None if profile.throughput is None else vars(profile.throughput),
            "reference": profile.reference,
            "backbones": None if profile.backbones is None else profile.backbones.table(),
        }


def assess_folder(
    source: Path, params: Params, *, sample: int = 0, remeasure: bool = False
) -> Assessment:
    """Intake, extraction, profile and decision for ``source`` with ``params``.

    Sizes count every usable image; with ``sample`` > 0 the similarity and the
    layer probes use a stratified sample of that many images (split x class).
    ``remeasure`` times this machine's throughput again.
    """
    intake = prepare_dataset(params.prepare.model_copy(update={"source": Path(source)}))
    if intake.fatal:
        raise DataError(f"{source}: {intake.fatal}")
    records = intake.records
    if sample:
        strata = np.array([f"{r.split}/{r.label}" for r in records])
        records = [records[i] for i in stratified_sample(strata, sample, params.profile.seed)]
    model, ranking = select_model(  # auto: the extract stage's ranking, on every record
        intake.records, params.model, params.extract, params.profile, params.decide
    )
    backbone = create_backbone(model.name, arch=model.arch)
    device = resolve_device(params.extract.device)
    with tempfile.TemporaryDirectory(prefix="transferpilot-profile-") as tmp:
        meta, _ = write_table(backbone, records, Path(tmp), params.extract, device=device)
        profile = build_profile(
            FeatureTable(records, meta, Path(tmp)),
            backbone,
            params.profile,
            params.extract,
            size=size_profile(intake.records),
            remeasure=remeasure,
        )
    profile = replace(profile, backbones=ranking)
    decision = choose_strategy(profile, params.decide, params.train)
    return Assessment(profile, decision, tuple(intake.findings))

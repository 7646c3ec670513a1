"""Profile a dataset: its size, its similarity to ImageNet, and how well each layer transfers.

This package holds what a profile *is* (light: the pure ``decide`` rule reads it);
:func:`transferpilot.profile.build.build_profile` measures one.

>>> from transferpilot.profile.build import build_profile
>>> profile = build_profile(table, backbone, ProfileParams(), ExtractParams())  # doctest: +SKIP
>>> profile.similarity.score  # doctest: +SKIP
0.71
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transferpilot._registry import JsonData
from transferpilot.layer_names import is_transfer
from transferpilot.profile._backbones import BackboneRanking, BackboneScore
from transferpilot.profile._probes import LayerProbe
from transferpilot.profile._similarity import (
    HeadMeasures,
    LayerGap,
    Similarity,
    depth_profile,
    frechet_distance,
    gaussian_kl,
    head_measures,
    similarity,
)
from transferpilot.profile._size import SizeProfile, size_profile, training_size
from transferpilot.profile._speed import Throughput, cached_throughput, measure_throughput
from transferpilot.sampling import held_in_split, stratified_sample

__all__ = [
    "BackboneRanking",
    "BackboneScore",
    "HeadMeasures",
    "LayerGap",
    "LayerProbe",
    "Profile",
    "Similarity",
    "SizeProfile",
    "Throughput",
    "cached_throughput",
    "depth_profile",
    "frechet_distance",
    "gaussian_kl",
    "head_measures",
    "held_in_split",
    "measure_throughput",
    "similarity",
    "size_profile",
    "stratified_sample",
    "training_size",
]


@dataclass(frozen=True)
class Profile(JsonData):
    """Everything measured about a dataset, as the decision needs it (``profile.json``)."""

    model: str
    layers: list[str]
    size: SizeProfile
    similarity: Similarity
    probes: list[LayerProbe]
    throughput: Throughput | None = None
    reference: dict[str, Any] | None = None
    input_size: int | None = None  # the model's square resolution
    backbones: BackboneRanking | None = None  # model.name auto: the candidates ranked

    def probe(self, layer: str, kind: str | None = None) -> LayerProbe | None:
        """The probe of ``layer`` (the every-layer kind unless ``kind`` is given)."""
        kind = kind or self.probe_kind
        return next((p for p in self.probes if p.layer == layer and p.kind == kind), None)

    @property
    def probe_kind(self) -> str:
        """The kind of classifier probed on every layer."""
        return self.probes[0].kind if self.probes else "svm"

    @property
    def layer_probes(self) -> list[LayerProbe]:
        """One probe per layer: the kind probed on every layer, in layer order."""
        return [p for p in self.probes if p.kind == self.probe_kind and p.layer in self.layers]

    @property
    def baseline_probes(self) -> list[LayerProbe]:
        """The no-transfer baseline's probes (raw pixels); empty in older profiles."""
        return [p for p in self.probes if not is_transfer(p.layer)]

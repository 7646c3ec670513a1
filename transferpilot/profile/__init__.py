"""Profile a dataset: its size, its similarity to ImageNet, and how well each layer transfers.

>>> profile = build_profile(  # doctest: +SKIP
...     records, arrays, points, moments, imagenet, prototypes, model="m", layers=["blocks.0"])
>>> profile.similarity.score  # doctest: +SKIP
0.71
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferpilot._registry import JsonData
from transferpilot.intake import Record
from transferpilot.profile._probes import (
    LayerProbe,
    ProbeOptions,
    probe_layers,
    probe_options,
    stratified_sample,
)
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
from transferpilot.profile._speed import Throughput, measure_throughput
from transferpilot.zoo import LOGITS, PRE_LOGITS

__all__ = [
    "HeadMeasures",
    "LayerGap",
    "LayerProbe",
    "ProbeOptions",
    "Profile",
    "Similarity",
    "SizeProfile",
    "Throughput",
    "build_profile",
    "frechet_distance",
    "gaussian_kl",
    "head_measures",
    "measure_throughput",
    "probe_layers",
    "probe_options",
    "similarity",
    "size_profile",
    "stratified_sample",
    "training_size",
]

Moments = Mapping[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Profile(JsonData):
    """Everything measured about a dataset, as the decision needs it."""

    model: str
    layers: list[str]
    size: SizeProfile
    similarity: Similarity
    probes: list[LayerProbe]
    throughput: Throughput | None = None
    reference: dict[str, Any] | None = None
    input_size: int | None = None  # the model's square resolution; None in older profiles

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
        return [p for p in self.probes if p.kind == self.probe_kind]


def build_profile(
    records: Sequence[Record],
    arrays: Mapping[str, np.ndarray],
    points: Mapping[str, str],
    moments: Moments,
    imagenet: Moments,
    prototypes: np.ndarray | None,
    *,
    model: str,
    layers: Sequence[str],
    probe: ProbeOptions = ProbeOptions(),
    throughput: Throughput | None = None,
    reference: dict[str, Any] | None = None,
    size: SizeProfile | None = None,
    input_size: int | None = None,
) -> Profile:
    """Measure ``records`` from their features (rows aligned with ``records``).

    ``layers`` are the candidate layers, early to late; ``pre_logits`` and
    ``logits`` are probed too. Probes use training rows only. ``size`` is the
    size profile of the whole dataset when ``records`` is a sample of it.
    """
    train = np.array([r.split == "train" for r in records])
    labels = [r.label for r in records if r.split == "train"]
    probed = [*layers, PRE_LOGITS, LOGITS]
    head = head_measures(arrays[LOGITS], arrays[PRE_LOGITS], prototypes)
    depth = depth_profile(points, moments, imagenet)
    return Profile(
        model=model,
        layers=probed,
        size=size or size_profile(records),
        similarity=similarity(head, depth),
        probes=probe_layers(
            {k: np.asarray(arrays[k])[train] for k in probed}, labels, probed, probe
        ),
        throughput=throughput,
        reference=reference,
        input_size=input_size,
    )


def profile_features(
    records: Sequence[Record],
    feats: Any,
    backbone: Any,
    *,
    probe: ProbeOptions = ProbeOptions(),
    throughput: Throughput | None = None,
    reference: dict[str, Any] | None = None,
    size: SizeProfile | None = None,
) -> Profile:
    """:func:`build_profile` from an in-memory :class:`~transferpilot.features.FeatureSet`."""
    from transferpilot.features import moment_points, running_stats, unique_points

    layers = [layer.name for layer in backbone.layers]
    points = moment_points(backbone.model, layers)
    imagenet = {
        bn: (mean.numpy(), var.numpy())
        for bn, (mean, var) in running_stats(backbone.model, unique_points(points)).items()
    }
    moments = {bn: (m.mean, m.var) for bn, m in feats.moments().items()}
    head = backbone.head()
    prototypes = head.weight.detach().float().cpu().numpy() if head is not None else None
    return build_profile(
        records,
        feats.arrays,
        points,
        moments,
        imagenet,
        prototypes,
        model=backbone.spec,
        layers=layers,
        probe=probe,
        throughput=throughput,
        reference=reference,
        size=size,
        input_size=backbone.data_config.input_size[1],
    )


def reference_distance(
    backbone: Any,
    folder: Any,
    codes: np.ndarray,
    *,
    cache_root: Any,
    device: Any = None,
    opts: Any = None,
) -> dict[str, Any]:
    """Fréchet distance between the dataset's CNN codes and those of a reference folder."""
    from transferpilot.config import PrepareParams
    from transferpilot.features import extract_features
    from transferpilot.intake import prepare_dataset

    ref = prepare_dataset(PrepareParams(source=folder, val_fraction=0.5))
    items = [(r.path, r.sha256) for r in ref.records]
    feats = extract_features(backbone, items, cache_root=cache_root, device=device, opts=opts)
    return {
        "folder": str(folder),
        "images": len(items),
        "frechet_pre_logits": frechet_distance(np.asarray(codes), feats.arrays[PRE_LOGITS]),
    }

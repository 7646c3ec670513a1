"""Measuring a profile: the one function the profile stage, ``transferpilot profile`` and
the benchmarks call.

>>> table = FeatureTable.open(Path("data/features"), Path("data/prepared/manifest.csv"))
>>> profile = build_profile(table, backbone, ProfileParams(), ExtractParams())  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from transferpilot.config import ExtractParams, ProfileParams
from transferpilot.device import resolve_device
from transferpilot.features import FeatureTable
from transferpilot.features._table import ALL, IMAGENET
from transferpilot.io import write_json
from transferpilot.layer_names import (
    JOIN,
    LOGITS,
    PIXELS,
    PRE_LOGITS,
    joinable,
    linear_inputs,
    parts,
)
from transferpilot.profile import (
    Profile,
    SizeProfile,
    cached_throughput,
    depth_profile,
    frechet_distance,
    head_measures,
    similarity,
    size_profile,
    stratified_sample,
)
from transferpilot.profile._probes import BASELINE_KINDS, LINEAR_KINDS, LayerProbe
from transferpilot.zoo import Backbone

log = logging.getLogger(__name__)


def _probe_key(
    X: np.ndarray, y: np.ndarray, kind: str, grid: Sequence[float], settings: ProfileParams
) -> str:
    """What makes a probe's result reusable: the exact rows and labels, the classifier and
    its settings, scikit-learn's version."""
    import sklearn

    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(X, dtype=np.float32).tobytes())
    digest.update("\x00".join(map(str, y)).encode())
    fields = ("probe_folds", "probe_max_iter", "probe_tol", "seed")
    recipe = {"kind": kind, "sklearn": sklearn.__version__, "shape": list(X.shape), "grid": grid}
    recipe |= {f: getattr(settings, f) for f in fields}
    digest.update(json.dumps(recipe, sort_keys=True, default=list).encode())
    return digest.hexdigest()[:32]


def build_profile(
    table: FeatureTable,
    backbone: Backbone,
    settings: ProfileParams,
    extract: ExtractParams,
    *,
    size: SizeProfile | None = None,
    remeasure: bool = False,
) -> Profile:
    """Measure the dataset behind ``table`` (features written by the extract step).

    ``size`` is the size profile of the whole dataset when ``table`` holds a
    sample of it. Probes use training rows only; throughput is measured once
    per machine at the resolution fine-tuning would train at (``remeasure``
    times it again); a ``settings.reference`` folder adds a Fréchet distance.
    """
    meta = table.meta
    size = size or size_profile(table.records)
    arrays = table.arrays()
    train = table.split == "train"
    probed = [*meta.layer_names, PRE_LOGITS, LOGITS]
    inputs = [*probed, PIXELS] if PIXELS in meta.outputs else probed
    moments = table.moments(ALL)
    imagenet = table.moments(IMAGENET)
    depth = depth_profile(
        meta.moment_points,
        {bn: (m.mean, m.var) for bn, m in moments.items()},
        {bn: (m.mean, m.var) for bn, m in imagenet.items()},
    )
    head = head_measures(arrays[LOGITS], arrays[PRE_LOGITS], table.prototypes())
    device = resolve_device(extract.device)
    throughput = None
    if settings.measure_throughput:
        throughput = cached_throughput(backbone, device, images=size, remeasure=remeasure)
    reference = None
    if settings.reference:
        reference = reference_distance(backbone, settings.reference, arrays[PRE_LOGITS], extract)
    return Profile(
        model=meta.model,
        layers=probed,
        size=size,
        similarity=similarity(head, depth),
        probes=probe_layers(
            {k: np.asarray(arrays[k])[train] for k in inputs},
            list(table.labels[train]),
            probed,
            settings,
        )
        + pretrained_probe(np.asarray(arrays[LOGITS])[train], table.labels[train], backbone),
        throughput=throughput,
        reference=reference,
        input_size=meta.input_size,
    )


def pretrained_probe(
    logits: np.ndarray, labels: np.ndarray, backbone: Backbone
) -> list[LayerProbe]:
    """The pretrained ImageNet head as it is (the seed's third scenario), when the class
    names map onto its classes (:func:`~transferpilot.zoo.imagenet_indices`): its accuracy
    on every training image, restricted to those classes. Nothing is fitted, so every
    training image is held-in; the spread is the binomial standard error (``folds`` 1)."""
    from transferpilot.zoo import imagenet_indices

    labels = np.asarray(labels)
    classes = np.unique(labels)
    indices = imagenet_indices([str(c) for c in classes], backbone.class_names)
    if indices is None or not len(labels):
        return []
    predicted = classes[linear_inputs(LOGITS, logits)[:, indices].argmax(1)]
    accuracy = float((predicted == labels).mean())
    spread = float(np.sqrt(accuracy * (1 - accuracy) / len(labels)))
    return [LayerProbe(LOGITS, len(indices), accuracy, 0.0, len(labels), "pretrained", spread, 1)]


def reference_distance(
    backbone: Backbone, folder: Path, codes: np.ndarray, extract: ExtractParams
) -> dict[str, Any]:
    """Fréchet distance between the dataset's CNN codes and those of a reference folder."""
    from transferpilot.config import PrepareParams
    from transferpilot.features import extract_features
    from transferpilot.intake import prepare_dataset

    ref = prepare_dataset(PrepareParams(source=folder, val_fraction=0.5))
    items = [(r.path, r.sha256) for r in ref.records]
    feats = extract_features(backbone, items, extract, resolve_device(extract.device))
    return {
        "folder": str(folder),
        "images": len(items),
        "frechet_pre_logits": frechet_distance(np.asarray(codes), feats.arrays[PRE_LOGITS]),
    }


def joined_candidates(probes: Sequence[LayerProbe], layers: Sequence[str]) -> list[str]:
    """The best two and the best three joinable layers by probe, each set joined in network
    order (``blocks.6+pre_logits``): inputs that may probe better than any one layer."""
    ranked = [p.layer for p in sorted(probes, key=lambda p: -p.cv_accuracy) if joinable(p.layer)]
    names = []
    for k in (2, 3):
        if len(ranked) >= k:
            names.append(JOIN.join(sorted(ranked[:k], key=list(layers).index)))
    return names


def probe_layers(
    features: Mapping[str, np.ndarray],
    labels: Sequence[str],
    layers: Sequence[str],
    settings: ProfileParams,
    *,
    join: bool = True,
) -> list[LayerProbe]:
    """CV accuracy of a linear classifier on each of ``layers`` (training rows only, please).

    Every layer gets the ``settings.probe`` classifier (in ``layers`` order);
    then the other linear strategy is probed on the ``probe_second_opinion``
    best layers, so that the decision can tell whether softmax regression or
    the SVM suits this data better (on the brain MRI set softmax regression
    cross-validates 2 points above the SVM; on ImageNet-like photos they tie).
    Where ``features`` hold the raw ``pixels``, the no-transfer baseline is probed
    too: softmax regression and the RBF-kernel SVM on them. The best two and three
    layers are also probed side by side (:func:`joined_candidates`), unless ``join`` is
    false.
    """
    from transferpilot.estimators import NCM_GRID, LinearClassifier  # defers scikit-learn

    y = np.asarray(labels)
    rows = stratified_sample(y, settings.probe_max_images, settings.seed)

    def inputs(layer: str) -> np.ndarray:
        if JOIN in layer:  # features side by side (no logits among them: see joinable)
            return np.hstack([np.asarray(features[part])[rows] for part in parts(layer)])
        return linear_inputs(layer, np.asarray(features[layer])[rows])

    def probe(layer: str, kind: str) -> LayerProbe:
        start = time.perf_counter()
        X = inputs(layer)
        grid = {"kernel": settings.kernel_c_grid, "ncm": NCM_GRID}.get(kind, settings.probe_c_grid)
        key = _probe_key(X, y[rows], kind, grid, settings)
        cached = settings.cache_dir / "probes" / f"{key}.json" if settings.cache_dir else None
        if cached is not None and cached.is_file():
            try:
                return replace(LayerProbe(**json.loads(cached.read_text())), layer=layer)
            except (ValueError, TypeError):
                log.warning("%s: unreadable probe record, probing again", cached)
        fitted = LinearClassifier(
            kind,  # type: ignore[arg-type]
            grid,
            settings.probe_folds,
            max_iter=settings.probe_max_iter,
            random_state=settings.seed,
            n_jobs=-1,
            tol=settings.probe_tol,
            calibrate=False,  # probes rank, they do not ship
        ).fit(X, y[rows])
        log.info("probe %s on %s: %.1f s", kind, layer, time.perf_counter() - start)
        result = LayerProbe(
            layer,
            X.shape[1],
            fitted.cv_accuracy_,
            fitted.best_C_,
            len(rows),
            kind,
            fitted.cv_std_,
            fitted.cv_folds_,
        )
        if cached is not None:
            write_json(cached, asdict(result))
        return result

    results = [probe(layer, settings.probe) for layer in layers]
    other = next(k for k in LINEAR_KINDS if k != settings.probe)
    ranked = sorted(results, key=lambda p: p.cv_accuracy, reverse=True)
    best = {p.layer for p in ranked[: settings.probe_second_opinion]}
    if join:
        results += [probe(name, settings.probe) for name in joined_candidates(results, layers)]
    results += [probe(layer, other) for layer in layers if layer in best]
    if PRE_LOGITS in layers:  # SimpleShot: the nearest class mean of the CNN codes
        results.append(probe(PRE_LOGITS, "ncm"))
    if PIXELS in features:
        results += [probe(PIXELS, kind) for kind, _ in BASELINE_KINDS]
    return results

"""The similarity maths on synthetic activations."""

from __future__ import annotations

import numpy as np
import pytest

from transferpilot.profile import (
    depth_profile,
    frechet_distance,
    gaussian_kl,
    head_measures,
    similarity,
)

RNG = np.random.default_rng(0)
MEAN = RNG.normal(size=64)
VAR = RNG.uniform(0.5, 2.0, size=64)
IMAGENET = {"bn": (MEAN, VAR)}


def moments_of(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return samples.mean(0), samples.var(0)


def test_kl_is_zero_for_the_same_distribution_and_grows_with_a_shift() -> None:
    assert np.allclose(gaussian_kl(MEAN, VAR, MEAN, VAR), 0.0)
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0]
    kls = [gaussian_kl(MEAN + s, VAR, MEAN, VAR).mean() for s in shifts]
    assert kls == sorted(kls) and kls[0] < 1e-12 < kls[1]
    wider = gaussian_kl(MEAN, VAR * 4, MEAN, VAR).mean()
    assert wider > 0


def test_depth_profile_same_data_overlaps_fully_shifted_data_less() -> None:
    same = RNG.normal(MEAN, np.sqrt(VAR), size=(20000, 64))
    (near,) = depth_profile({"layer": "bn"}, {"bn": moments_of(same)}, IMAGENET)
    assert near.kl_mean < 0.01 and near.overlap > 0.99
    overlaps = []
    for shift in (0.25, 1.0, 3.0):
        data = RNG.normal(MEAN + shift, np.sqrt(VAR), size=(5000, 64))
        (gap,) = depth_profile({"layer": "bn"}, {"bn": moments_of(data)}, IMAGENET)
        overlaps.append(gap.overlap)
    assert overlaps == sorted(overlaps, reverse=True) and overlaps[-1] < 0.2


def test_head_certainty_spans_uniform_to_certain() -> None:
    uniform = head_measures(np.zeros((5, 1000)))
    assert uniform.certainty == pytest.approx(0.0, abs=1e-9)
    assert uniform.confidence == pytest.approx(1 / 1000)
    peaked = np.zeros((5, 1000))
    peaked[:, 7] = 50.0
    sure = head_measures(peaked)
    assert sure.certainty > 0.99 and sure.confidence > 0.99


def test_prototype_cosine_is_one_for_codes_on_a_prototype() -> None:
    prototypes = RNG.normal(size=(10, 16))
    codes = prototypes[[1, 4]] * 3.0
    assert head_measures(np.zeros((2, 10)), codes, prototypes).prototype_cosine == pytest.approx(
        1.0
    )


def test_similarity_multiplies_certainty_by_overlap_and_falls_back_without_batchnorm() -> None:
    head = head_measures(np.tile([[4.0] + [0.0] * 9], (3, 1)))
    (gap,) = depth_profile({"pre_logits": "bn"}, {"bn": (MEAN + 0.5, VAR)}, IMAGENET)
    score = similarity(head, [gap])
    assert score.score == pytest.approx(head.certainty * gap.overlap)
    alone = similarity(head, [])
    assert alone.score == head.certainty and alone.overlap is None and "no BatchNorm" in alone.note


def test_frechet_distance() -> None:
    a = RNG.normal(size=(4000, 8))
    b = RNG.normal(size=(4000, 8))
    assert frechet_distance(a, b) < 0.05
    assert frechet_distance(a, b + 2.0) == pytest.approx(8 * 4.0, rel=0.05)

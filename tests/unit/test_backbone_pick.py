"""model.name auto: the scores that rank candidate backbones and the rule that picks one."""

from __future__ import annotations

import numpy as np
import pytest

from transferpilot.config import ModelParams, parse_params
from transferpilot.errors import ConfigError
from transferpilot.profile import BackboneRanking, BackboneScore
from transferpilot.profile._backbones import knn_accuracy, logme, pick_backbone, tie_margin


def _clusters(n: int, d: int, classes: int, spread: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, d)) * 3
    return centres[labels] + spread * rng.normal(size=(n, d)), labels.astype(str)


def _score(model: str, probe: float, extract: float | None = 1.0, finetune: float = 0.0):
    return BackboneScore(
        model, "pre_logits", probe, 0.01, 3, probe, 0.0,
        extract_minutes=extract, finetune_minutes=finetune,
    )  # fmt: skip


def test_logme_prefers_separable_features_to_noise() -> None:
    separable, labels = _clusters(120, 16, 3, spread=0.3)
    noise = np.random.default_rng(1).normal(size=separable.shape)
    assert logme(separable, labels) > logme(noise, labels) + 0.1


def test_logme_is_the_same_in_the_row_space_when_there_are_more_dims_than_images() -> None:
    """Zero columns add no evidence: the d <= n and the d > n computations must agree."""
    x, labels = _clusters(40, 24, 2, spread=1.0)
    padded = np.hstack([x, np.zeros((40, 60))])  # 84 dims > 40 images
    assert logme(padded, labels) == pytest.approx(logme(x, labels), rel=1e-6, abs=1e-6)


def test_knn_accuracy_is_perfect_on_clusters_and_near_chance_on_noise() -> None:
    x, labels = _clusters(90, 8, 3, spread=0.2)
    assert knn_accuracy(x, labels, folds=3, seed=0) == 1.0
    noise = np.random.default_rng(2).normal(size=(300, 8))
    assert knn_accuracy(noise, labels.repeat(4)[:300], folds=3, seed=0) < 0.5


def test_the_best_probe_wins_when_the_sample_can_show_the_difference() -> None:
    ranking = pick_backbone(
        [_score("small", 0.90, 1.0), _score("big", 0.95, 3.0)], 300, budget_minutes=60
    )
    assert ranking.chosen == "big"
    assert [s.model for s in ranking.scores] == ["big", "small"]  # best probe first
    assert ranking.score("small").verdict == "probes 0.050 below big"
    assert "300 training images" in ranking.reason and ranking.reason.startswith("Backbone big")


def test_a_tie_within_the_margin_goes_to_the_cheaper_run() -> None:
    assert tie_margin(300) == 0.005  # half a point, at least
    assert tie_margin(100) == pytest.approx(0.01)  # one image of a small sample
    ranking = pick_backbone(
        [_score("small", 0.950, 1.0, 10.0), _score("big", 0.952, 3.0, 30.0)], 300, 60
    )
    assert ranking.chosen == "small"
    assert ranking.score("big").verdict.startswith("tie within 0.005")
    assert ranking.reason.startswith(
        "Backbone small: the cheapest run (about 11.0 min here) among the 2 of 2 candidates "
        "whose linear probe is within 0.005 of the best"
    )


def test_a_backbone_whose_extraction_exceeds_the_budget_is_out() -> None:
    scores = [_score("small", 0.90, 5.0), _score("big", 0.99, 90.0)]
    ranking = pick_backbone(scores, 300, budget_minutes=60)
    assert ranking.chosen == "small"
    assert "over the 60 min budget" in ranking.score("big").verdict
    assert pick_backbone(scores, 300, budget_minutes=None).chosen == "big"
    everything_over = pick_backbone(scores, 300, budget_minutes=1)
    assert everything_over.chosen == "small"  # all out: the cheapest extraction


def test_unknown_costs_leave_the_pick_to_the_probe_and_a_tie_to_the_list_order() -> None:
    ranking = pick_backbone([_score("a", 0.80, None), _score("b", 0.90, None)], 300, 60)
    assert ranking.chosen == "b"
    tie = pick_backbone([_score("a", 0.900, None), _score("b", 0.902, None)], 300, 60)
    assert tie.chosen == "a" and tie.reason.startswith("Backbone a: first listed among the 2")
    assert tie.score("b").verdict == "tie within 0.005: a is listed first"


def test_the_ranking_round_trips_through_json() -> None:
    ranking = pick_backbone([_score("a", 0.8), _score("b", 0.9)], 100, None)
    again = BackboneRanking.from_dict(ranking.to_dict())
    assert again == ranking
    assert again.table()[0]["cost_minutes"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "candidates",
    [("auto",), ("file:x.safetensors",), ("efficientnet_lite0", "efficientnet_lite0"), ()],
)
def test_bad_candidate_lists_are_refused(candidates: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="candidates"):
        parse_params({"model": {"name": "auto", "candidates": list(candidates)}})


def test_auto_defaults_to_the_offline_lite_family() -> None:
    model = ModelParams(name="auto")
    assert model.candidates == ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

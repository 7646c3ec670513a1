"""The decision table: four quadrants, overrides, the budget rule, reasons with numbers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.profiles import make_profile
from transferpilot.config import DecideParams, TrainParams
from transferpilot.decide import Decision, against, choose_strategy, finetune_minutes
from transferpilot.errors import ConfigError
from transferpilot.profile import (
    LayerProbe,
    Profile,
    Throughput,
    training_size,
)


@pytest.mark.parametrize(
    ("per_class", "score", "quadrant", "strategy"),
    [
        (100, 0.8, "small/similar", "linear"),
        (100, 0.2, "small/different", "svm"),
        (500, 0.8, "large/similar", "finetune"),
        (500, 0.2, "large/different", "finetune"),
    ],
)
def test_the_four_quadrants(per_class: int, score: float, quadrant: str, strategy: str) -> None:
    decision = choose_strategy(make_profile(per_class=per_class, score=score), DecideParams())
    assert (decision.quadrant, decision.strategy) == (quadrant, strategy)
    assert f"{score:.2f}" in decision.reason and f"{per_class:g}" in decision.reason
    assert not decision.overridden
    assert Decision.from_dict(decision.to_dict()) == decision


@pytest.mark.parametrize(
    ("value", "threshold", "shown"),
    [
        (0.496, 0.5, "0.496"),
        (0.4999, 0.5, "0.4999"),
        (0.5, 0.5, "0.50"),
        (0.42, 0.5, "0.42"),
        (0.504, 0.5, "0.504"),
        (0.731, 0.5, "0.73"),
    ],
)
def test_a_score_near_its_threshold_shows_the_digits_that_decide(
    value: float, threshold: float, shown: str
) -> None:
    assert against(value, threshold) == shown


def test_the_reason_never_rounds_a_score_onto_the_other_side_of_the_threshold() -> None:
    decision = choose_strategy(make_profile(per_class=100, score=0.496), DecideParams())
    assert decision.domain == "different"
    assert "similarity 0.496 (< 0.5" in decision.reason


def test_thresholds_come_from_params() -> None:
    profile = make_profile(per_class=100, score=0.4)
    relaxed = DecideParams(large_images_per_class=50, similarity_threshold=0.3)
    assert choose_strategy(profile, relaxed).quadrant == "large/similar"


def test_small_different_takes_the_best_probed_layer_and_records_every_score() -> None:
    probes = {
        "blocks.0": 0.5,
        "blocks.2": 0.7,
        "blocks.4": 0.93,
        "blocks.6": 0.9,
        "pre_logits": 0.85,
        "logits": 0.8,
    }
    decision = choose_strategy(make_profile(per_class=50, score=0.1, probes=probes), DecideParams())
    assert (decision.strategy, decision.layer) == ("svm", "blocks.4")
    assert decision.evidence["probes"] == probes
    assert "blocks.4 0.930" in decision.reason


def test_small_similar_uses_the_head_outputs_when_they_probe_better() -> None:
    probes = {"blocks.6": 0.9, "pre_logits": 0.93, "logits": 0.97}
    decision = choose_strategy(make_profile(per_class=50, score=0.9, probes=probes), DecideParams())
    assert (decision.strategy, decision.layer) == ("linear", "logits")
    assert "log-probabilities" in decision.reason


def test_finetune_freezes_matching_early_layers_only_for_similar_data() -> None:
    similar = choose_strategy(
        make_profile(per_class=500, score=0.8, overlaps=[0.99, 0.98, 0.9, 0.97, 0.8]),
        DecideParams(),
    )
    assert similar.frozen_layers == ["blocks.0", "blocks.2"]
    assert similar.train.lr_ratio == 0.1 and similar.train.epochs == 10
    different = choose_strategy(make_profile(per_class=500, score=0.2), DecideParams())
    assert different.frozen_layers == []
    assert different.train.lr_ratio == 0.3


def test_budget_vetoes_finetuning_and_says_so() -> None:
    slow = make_profile(per_class=500, score=0.8, train_rate=2.0)
    minutes = finetune_minutes(slow, 10)
    assert minutes is not None and minutes > 60
    decision = choose_strategy(slow, DecideParams(budget_minutes=60))
    assert decision.strategy == "svm" and decision.layer == "pre_logits"  # the best probe
    assert "budget" in decision.reason and f"{minutes:.0f} min" in decision.reason
    unlimited = choose_strategy(slow, DecideParams(budget_minutes=None))
    assert unlimited.strategy == "finetune"


def with_logistic(profile: Profile, scores: dict[str, float]) -> Profile:
    extra = [LayerProbe(k, 8, v, 0.01, 100, "linear") for k, v in scores.items()]
    return replace(profile, probes=[*profile.probes, *extra])


def test_small_different_takes_softmax_regression_only_when_it_cross_validates_better() -> None:
    base = make_profile(per_class=50, score=0.1)  # best SVM probe: pre_logits 0.9
    better = choose_strategy(with_logistic(base, {"pre_logits": 0.92}), DecideParams())
    assert (better.strategy, better.layer) == ("linear", "pre_logits")
    assert "softmax regression cross-validates better (0.920)" in better.reason
    assert "pre_logits 0.900" in better.reason
    assert better.evidence["second_opinion"] == {"linear pre_logits": 0.92}
    assert better.evidence["probes"]["pre_logits"] == 0.9  # the per-layer table stays the SVM's
    tie = choose_strategy(with_logistic(base, {"pre_logits": 0.9}), DecideParams())
    assert (tie.strategy, tie.layer) == ("svm", "pre_logits")
    forced = choose_strategy(
        with_logistic(base, {"pre_logits": 0.99}), DecideParams(strategy="svm")
    )
    assert forced.strategy == "svm"  # a manual strategy is never switched


def test_budget_fallback_takes_the_best_probe_of_either_kind() -> None:
    slow = with_logistic(make_profile(per_class=500, score=0.8, train_rate=2.0), {"logits": 0.95})
    decision = choose_strategy(slow, DecideParams(budget_minutes=60))
    assert (decision.strategy, decision.layer) == ("linear", "logits")


def test_finetuning_small_images_plans_a_smaller_resolution() -> None:
    profile = make_profile(per_class=500, score=0.2)  # 32 px images
    planned = choose_strategy(replace(profile, throughput=None, input_size=224), DecideParams())
    assert planned.train.input_size == 64
    measured = replace(profile, throughput=Throughput(100.0, 400.0, 16, "cpu", 96))
    decision = choose_strategy(measured, DecideParams())
    assert decision.train.input_size == 96  # the size throughput was measured at
    assert "at 96 px" in decision.reason


@pytest.mark.parametrize(
    ("side", "size"), [(28, 64), (32, 64), (48, 96), (100, 224), (112, 224), (375, 224)]
)
def test_training_size_follows_small_images_only(side: int, size: int) -> None:
    profile = make_profile(per_class=10, score=0.5)
    dims = {"min": side, "median": side, "max": side}
    assert training_size(replace(profile.size, width=dims, height=dims), 224) == size


def test_the_plan_keeps_only_the_settings_its_strategy_reads() -> None:
    train = TrainParams(lr=0.05, c_grid=(0.5,), epochs=4)
    svm = choose_strategy(make_profile(per_class=50, score=0.1), DecideParams(), train)
    assert svm.train.c_grid == (0.5,) and svm.train.lr == TrainParams().lr  # lr: not svm's
    tuned = choose_strategy(make_profile(per_class=500, score=0.8), DecideParams(), train)
    assert tuned.train.lr == 0.05 and tuned.train.epochs == 4  # params.yaml wins over the plan
    assert tuned.train.c_grid == TrainParams().c_grid
    assert Decision.from_dict(tuned.to_dict()) == tuned  # decision.json round-trips, typed


def test_manual_overrides() -> None:
    profile = make_profile(per_class=100, score=0.2)
    forced = choose_strategy(profile, DecideParams(strategy="finetune"))
    assert forced.strategy == "finetune" and forced.overridden
    assert "Manual override" in forced.reason and "svm" in forced.reason
    layer = choose_strategy(profile, DecideParams(layer="blocks.2"))
    assert (layer.strategy, layer.layer, layer.overridden) == ("svm", "blocks.2", True)
    with pytest.raises(ConfigError, match=r"decide.layer.*valid: blocks.0"):
        choose_strategy(profile, DecideParams(layer="conv99"))


def with_baseline(profile: Profile, kernel: float, std: float = 0.01) -> Profile:
    """The profile plus the raw-pixel probes (3-fold CV, spread ``std``)."""
    pixels = [
        LayerProbe("pixels", 768, kernel - 0.05, 0.01, 100, "linear", std, 3),
        LayerProbe("pixels", 768, kernel, 1.0, 100, "kernel", std, 3),
    ]
    return replace(profile, probes=[*profile.probes, *pixels])


def test_the_baseline_ships_when_it_beats_every_transfer_candidate_on_held_in_data() -> None:
    """Digits-like: the table says SVM on a layer; raw pixels cross-validate far better."""
    profile = with_baseline(make_profile(per_class=100, score=0.2), kernel=0.98)
    decision = choose_strategy(profile, DecideParams())
    assert (decision.strategy, decision.layer) == ("baseline", "pixels")
    assert "no transfer" in decision.reason and "more than one standard error" in decision.reason
    assert decision.baseline_score == 0.98 and decision.transfer_gain == 0.0
    assert decision.train == TrainParams().for_strategy("baseline")
    assert decision.train.kernel_c_grid == TrainParams().kernel_c_grid
    chosen = [c for c in decision.candidates if c.verdict == "chosen"]
    assert [(c.strategy, c.layer, c.transfer) for c in chosen] == [("baseline", "pixels", False)]
    # every probe is a candidate, plus fine-tuning with its cost
    assert len(decision.candidates) == len(profile.probes) + 1
    tune = decision.candidates[-1]
    assert tune.strategy == "finetune" and tune.score is None and tune.minutes is not None
    assert Decision.from_dict(decision.to_dict()) == decision


def test_a_candidate_within_one_standard_error_does_not_overturn_the_table() -> None:
    """pre_logits 0.90 is the table's pick (small/similar); pixels at 0.905 ± 0.03 is noise."""
    profile = with_baseline(make_profile(per_class=100, score=0.8), kernel=0.905, std=0.03)
    decision = choose_strategy(profile, DecideParams())
    assert (decision.strategy, decision.layer) == ("linear", "pre_logits")
    assert decision.transfer_gain == pytest.approx(0.9 - 0.905)
    assert "baseline cross-validates 0.905" in decision.reason
    pixels = next(c for c in decision.candidates if c.strategy == "baseline")
    assert "within one standard error" in pixels.verdict


def test_a_better_transfer_layer_wins_by_evidence_and_the_gain_is_reported() -> None:
    probes = {"blocks.4": 0.95, "pre_logits": 0.8, "logits": 0.78}
    profile = replace(
        make_profile(per_class=100, score=0.8, probes=probes),
        probes=[LayerProbe(k, 8, v, 0.01, 100, "svm", 0.01, 3) for k, v in probes.items()],
    )
    decision = choose_strategy(with_baseline(profile, kernel=0.6), DecideParams())
    assert (decision.strategy, decision.layer) == ("svm", "blocks.4")
    assert decision.transfer_gain == pytest.approx(0.35)


def test_large_data_still_fine_tunes_and_the_heads_say_why_not() -> None:
    decision = choose_strategy(
        with_baseline(make_profile(per_class=500, score=0.8), kernel=0.99), DecideParams()
    )
    assert decision.strategy == "finetune"
    assert all("fine-tuning preferred" in c.verdict for c in decision.candidates[:-1])


def test_a_pinned_throughput_makes_the_decision_independent_of_the_measurement() -> None:
    """The same folder and params decide the same on a busy machine (slow measurement)."""
    rules = DecideParams(train_images_per_s=50.0)
    idle = make_profile(per_class=2000, score=0.8, train_rate=100.0)
    busy = replace(idle, throughput=replace(idle.throughput, train_images_per_s=5.0))
    a, b = choose_strategy(idle, rules), choose_strategy(busy, rules)
    assert a == b and a.evidence["throughput_source"] == "pinned"
    assert a.evidence["train_images_per_s"] == 50.0
    # unpinned, the slow measurement would veto fine-tuning
    assert (
        choose_strategy(busy, DecideParams()).strategy
        != choose_strategy(idle, DecideParams()).strategy
    )


def test_a_linear_model_on_the_pixels_can_be_asked_for_by_hand() -> None:
    profile = with_baseline(make_profile(per_class=100, score=0.2), kernel=0.7)
    decision = choose_strategy(profile, DecideParams(strategy="linear", layer="pixels"))
    assert (decision.strategy, decision.layer, decision.overridden) == ("linear", "pixels", True)
    assert "0.650" in decision.reason  # the linear probe on the pixels, not the SVM's
    with pytest.raises(ConfigError, match="pixels"):  # listed among the valid layers
        choose_strategy(profile, DecideParams(layer="conv99"))


def with_pretrained(profile: Profile, accuracy: float, n: int = 400) -> Profile:
    """The profile plus the pretrained ImageNet head's score on every training image."""
    spread = (accuracy * (1 - accuracy) / n) ** 0.5
    head = LayerProbe("logits", 4, accuracy, 0.0, n, "pretrained", spread, 1)
    return replace(profile, probes=[*profile.probes, head])


def test_the_pretrained_head_ships_when_it_beats_the_table_by_more_than_its_error() -> None:
    """Class names that name ImageNet classes: the head as it is scores 0.98 on 400
    training images (± 0.007); the table's softmax regression on pre_logits 0.90."""
    decision = choose_strategy(
        with_pretrained(make_profile(per_class=100, score=0.8), 0.98), DecideParams()
    )
    assert (decision.strategy, decision.layer) == ("pretrained", "logits")
    assert "pretrained ImageNet classifier as it is" in decision.reason
    assert "0.980 ± 0.007 on all 400 training images" in decision.reason
    chosen = [c for c in decision.candidates if c.verdict == "chosen"]
    assert [(c.strategy, c.layer) for c in chosen] == [("pretrained", "logits")]
    assert decision.train == TrainParams().for_strategy("pretrained")


def test_a_pretrained_head_within_its_error_keeps_the_table_and_never_sways_the_layer() -> None:
    """0.905 ± 0.015 vs the table's 0.90: noise. It must not move the linear plan's layer
    either (logits probes 0.88 as a classifier; the head's score is not a logits probe)."""
    profile = with_pretrained(make_profile(per_class=100, score=0.8), 0.905)
    decision = choose_strategy(profile, DecideParams())
    assert (decision.strategy, decision.layer) == ("linear", "pre_logits")


def test_pretrained_by_hand_needs_class_names_that_name_imagenet_classes() -> None:
    profile = make_profile(per_class=100, score=0.8)
    with pytest.raises(ConfigError, match="pretrained needs class names"):
        choose_strategy(profile, DecideParams(strategy="pretrained"))
    decision = choose_strategy(with_pretrained(profile, 0.7), DecideParams(strategy="pretrained"))
    assert decision.strategy == "pretrained" and decision.overridden


def test_joined_layers_compete_as_candidates_and_can_be_set_by_hand() -> None:
    """blocks.4+blocks.6 side by side probes 0.95 ± 0.01 against the table's 0.85 on
    blocks.6 (small/different): it wins on held-in evidence, like any other input."""
    profile = make_profile(per_class=100, score=0.2)
    joined = LayerProbe("blocks.4+blocks.6", 16, 0.95, 0.01, 100, "svm", 0.01, 3)
    decision = choose_strategy(replace(profile, probes=[*profile.probes, joined]), DecideParams())
    assert (decision.strategy, decision.layer) == ("svm", "blocks.4+blocks.6")
    by_hand = choose_strategy(profile, DecideParams(strategy="svm", layer="blocks.2+pre_logits"))
    assert by_hand.layer == "blocks.2+pre_logits"
    for bad in ("blocks.6+logits", "blocks.6+pixels", "blocks.6+blocks.9"):
        with pytest.raises(ConfigError, match="joined by"):
            choose_strategy(profile, DecideParams(strategy="svm", layer=bad))


def test_the_best_two_and_three_layers_are_joined_in_network_order() -> None:
    from transferpilot.profile.build import joined_candidates

    layers = ["blocks.2", "blocks.4", "blocks.6", "pre_logits", "logits"]
    scores = {"blocks.2": 0.5, "blocks.4": 0.8, "blocks.6": 0.9, "pre_logits": 0.7, "logits": 0.95}
    probes = [LayerProbe(k, 8, v, 0.01, 100) for k, v in scores.items()]
    assert joined_candidates(probes, layers) == [
        "blocks.4+blocks.6",
        "blocks.4+blocks.6+pre_logits",
    ]  # logits (the best) never joins: a linear model reads it as log-probabilities


def test_the_nearest_class_mean_wins_only_by_evidence_and_can_be_asked_for() -> None:
    """SimpleShot is a candidate like any head: on a tiny set where it cross-validates
    clearly above the table's pick it ships, with the reason; within one standard error it
    does not; and ``decide.strategy: ncm`` asks for it by hand."""
    base = make_profile(per_class=5, score=0.8)
    ncm = LayerProbe("pre_logits", 8, 0.97, 1.0, 15, "ncm", 0.02, 5)
    decision = choose_strategy(replace(base, probes=[*base.probes, ncm]), DecideParams())
    assert (decision.strategy, decision.layer) == ("ncm", "pre_logits")
    assert "nearest class mean (SimpleShot)" in decision.reason
    assert decision.train == TrainParams().for_strategy("ncm")
    close = replace(ncm, cv_accuracy=0.91, cv_std=0.05)
    kept = choose_strategy(replace(base, probes=[*base.probes, close]), DecideParams())
    assert kept.strategy == "linear"
    by_hand = choose_strategy(
        replace(base, probes=[*base.probes, close]), DecideParams(strategy="ncm")
    )
    assert (by_hand.strategy, by_hand.layer) == ("ncm", "pre_logits")
    assert "SimpleShot" in by_hand.reason and "0.910" in by_hand.reason

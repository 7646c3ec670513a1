"""Fine-tuning trials: what is trialled and why not, the schedule, how a trial moves the
decision, and a real successive-halving run on a tiny network."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.profiles import make_profile
from tests.projects import feature_table
from transferpilot.config import DecideParams, TrainParams
from transferpilot.decide import Decision, choose_strategy, finetune_plans, trial_plans
from transferpilot.profile import LayerProbe
from transferpilot.trial_plans import Plan, Trial, TrialReport, first_rung, promising, rung_images


def sized(**kwargs):
    """A test profile of 32-px images for a 224-px model: plans at 64 px and at 224 px."""
    return replace(make_profile(**kwargs), input_size=224)


def report(*trials: Trial, planned_s: float = 30.0) -> TrialReport:
    return TrialReport(trials=list(trials), budget_s=60.0, planned_s=planned_s, note="test")


def trial(size: int, accuracy: float, rung: int = 0, held_in: int = 60) -> Trial:
    return Trial(size, rung, 340, 1 + rung, held_in, accuracy, 10.0)


def test_plans_cost_the_pixels_they_train_at() -> None:
    plans = finetune_plans(sized(per_class=100, score=0.2), DecideParams(), TrainParams())
    small, full = plans
    assert (small.input_size, full.input_size) == (64, 224)
    assert small.train_rate == 100.0  # measured there (the rule's resolution)
    assert full.train_rate == pytest.approx(100.0 * (64 / 224) ** 2)
    assert full.minutes == pytest.approx(small.minutes * (224 / 64) ** 2)
    own = finetune_plans(
        sized(per_class=100, score=0.2), DecideParams(), TrainParams(input_size=96)
    )
    assert [p.input_size for p in own] == [96]  # params.yaml's resolution alone


def test_a_small_set_trials_the_plans_whose_first_rung_fits() -> None:
    plans, budget_s, why = trial_plans(sized(per_class=100, score=0.2), DecideParams())
    assert why == ""
    assert [p.input_size for p in plans] == [64]  # 224 px cannot take half the images in time
    assert budget_s == pytest.approx(60 * plans[0].minutes / 3)  # a third of the full run


@pytest.mark.parametrize(
    ("rules", "profile", "words"),
    [
        (DecideParams(strategy="svm"), sized(per_class=100, score=0.2), "set by hand"),
        (DecideParams(trial_minutes=0), sized(per_class=100, score=0.2), "trials are off"),
        (
            DecideParams(),
            replace(sized(per_class=100, score=0.2), throughput=None),
            "no throughput",
        ),
        (DecideParams(), sized(per_class=500, score=0.2), "one plan fits"),
        (
            DecideParams(budget_minutes=0.5),
            sized(per_class=100, score=0.2),
            "over the 0.5 min budget",
        ),
    ],
)
def test_no_trial_says_why(rules: DecideParams, profile, words: str) -> None:
    plans, _, why = trial_plans(profile, rules)
    assert plans == [] and words in why
    decision = choose_strategy(profile, rules)
    row = next(c for c in decision.candidates if c.strategy == "finetune")
    assert row.score is None and row.verdict


def test_a_trial_that_beats_the_heads_earns_a_small_set_its_fine_tuning() -> None:
    profile = sized(per_class=100, score=0.2)  # small/different: the table says svm
    won = choose_strategy(profile, DecideParams(), trials=report(trial(64, 0.97)))
    assert won.strategy == "finetune" and won.train.input_size == 64
    assert "fine-tuning trial scores 0.970" in won.reason and "network is fine-tuned" in won.reason
    chosen = [c for c in won.candidates if c.verdict == "chosen"]
    assert [(c.strategy, c.input_size, c.score) for c in chosen] == [("finetune", 64, 0.97)]
    assert won.transfer_gain is None or won.transfer_gain == pytest.approx(0.97 - 0.9)
    assert won.evidence["trials"]["trials"][0]["accuracy"] == 0.97

    # within one standard error of the best head (0.90; SE of 0.91 on 60 images is 0.037)
    kept = choose_strategy(profile, DecideParams(), trials=report(trial(64, 0.91)))
    assert kept.strategy == "svm"
    row = next(c for c in kept.candidates if c.strategy == "finetune" and c.input_size == 64)
    assert row.score == 0.91 and "does not beat" in row.verdict
    lower = choose_strategy(profile, DecideParams(), trials=report(trial(64, 0.7)))
    row = next(c for c in lower.candidates if c.strategy == "finetune" and c.input_size == 64)
    assert row.verdict == "lower held-in score (-0.200, a short trial)"


def test_a_lost_trial_does_not_talk_a_large_set_out_of_fine_tuning() -> None:
    profile = sized(per_class=500, score=0.2)
    lost = choose_strategy(profile, DecideParams(), trials=report(trial(64, 0.5)))
    assert lost.strategy == "finetune"  # a truncated run underestimates the full one


def test_the_trials_choose_the_resolution_of_a_large_set() -> None:
    profile = sized(per_class=500, score=0.2, train_rate=400.0)  # both plans fit the budget
    trials = report(trial(64, 0.80), trial(224, 0.90))
    decision = choose_strategy(profile, DecideParams(), trials=trials)
    assert decision.strategy == "finetune" and decision.train.input_size == 224
    verdicts = {c.input_size: c.verdict for c in decision.candidates if c.strategy == "finetune"}
    assert verdicts == {64: "the other resolution's trial scored higher", 224: "chosen"}


def test_the_trials_count_against_the_budget() -> None:
    profile = sized(per_class=500, score=0.2, train_rate=100.0)
    plan = finetune_plans(profile, DecideParams(), TrainParams())[0]  # 64 px
    budget = plan.minutes + 1.0  # fits alone, not after two minutes of trials
    rules = DecideParams(budget_minutes=budget)
    assert choose_strategy(profile, rules).strategy == "finetune"
    over = choose_strategy(profile, rules, trials=report(trial(64, 0.95), planned_s=120.0))
    assert over.strategy == "svm" and "after 2.0 min of trials" in over.reason


def test_a_decision_with_trials_round_trips_through_json() -> None:
    profile = sized(per_class=100, score=0.2)
    decision = choose_strategy(profile, DecideParams(), trials=report(trial(64, 0.97)))
    assert Decision.from_dict(decision.to_dict()) == decision


def test_the_schedule_arithmetic() -> None:
    cheap = Plan(64, 0.3, [], train_rate=100.0, eval_rate=400.0, minutes=1.0)
    dear = Plan(224, 0.3, [], train_rate=10.0, eval_rate=40.0, minutes=10.0)
    # 1 epoch: 1/100 + 1/400 s per image, 40 held-in images at 400/s once
    assert rung_images([cheap], 10.0, epochs=1, held_in=40, available=10_000) == 792
    assert rung_images([cheap], 10.0, epochs=1, held_in=40, available=300) == 300
    assert rung_images([cheap], 0.05, epochs=1, held_in=40, available=300) == 0
    live, n = first_rung([dear, cheap], 30.0, fit=600, held_in=40, classes=4)
    assert live == [cheap] and n == 600  # the dear plan cannot take 300 images in 10 s
    assert first_rung([dear], 3.0, fit=600, held_in=40, classes=4) == ([], 0)
    assert promising(trial(64, 0.8), None)
    assert promising(trial(64, 0.85, held_in=60), 0.9)  # 0.85 + 2 x 0.046 reaches 0.9
    assert not promising(trial(64, 0.5, held_in=60), 0.9)


# -- a real run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory: pytest.TempPathFactory):
    """A tiny network (random weights) and the feature table of 40 tiny images."""
    return feature_table(
        tmp_path_factory.mktemp("trials"), {"red": 20, "blue": 20}, "timm:test_resnet"
    )


SETTINGS = TrainParams(batch_size=8, lr=3e-3, label_smoothing=0.0, workers=0, seed=1)


def test_successive_halving_on_a_tiny_network(tiny_table) -> None:
    from transferpilot.finetune.trial_runs import run_trials

    backbone, table = tiny_table
    plan = Plan(64, 1.0, [], train_rate=50.0, eval_rate=200.0, minutes=1.0)
    promoted = run_trials(table, backbone, [plan], SETTINGS, 30.0, rival=None)
    held_in = 2 * round(0.15 * 16)  # 16 training images per class, 15 % held in
    assert [(t.rung, t.epochs) for t in promoted.trials] == [(0, 1), (1, 2)]
    first, second = promoted.trials
    assert first.held_in == second.held_in == held_in
    assert first.images >= (32 - held_in) // 2 and second.images == 32 - held_in
    assert 0.0 <= second.accuracy <= 1.0 and promoted.best() == second
    assert "promoted: 64 px" in promoted.note
    assert promoted.planned_s <= promoted.budget_s

    again = run_trials(table, backbone, [plan], SETTINGS, 30.0, rival=None)
    assert again == promoted  # fixed seeds, a schedule from estimates: the same every time

    hopeless = run_trials(table, backbone, [plan], SETTINGS, 30.0, rival=1.01)
    assert [t.rung for t in hopeless.trials] == [0]
    assert "not promoted" in hopeless.note and "out of reach" in hopeless.note
    assert np.isclose(hopeless.trials[0].accuracy, first.accuracy)


def test_no_trial_when_the_budget_buys_no_epoch(tiny_table) -> None:
    from transferpilot.finetune.trial_runs import run_trials

    backbone, table = tiny_table
    plan = Plan(64, 1.0, [], train_rate=50.0, eval_rate=200.0, minutes=1.0)
    none = run_trials(table, backbone, [plan], SETTINGS, 0.01, rival=None)
    assert none.trials == [] and "fits" in none.note


def test_the_rival_is_the_best_of_every_probe() -> None:
    """The best head is the best of every probe: the pretrained head counts too."""
    from transferpilot.decide import best_head

    profile = sized(per_class=100, score=0.2)
    extra = replace(
        profile, probes=[*profile.probes, LayerProbe("logits", 8, 0.95, 0, 100, "pretrained")]
    )
    assert best_head(extra) == 0.95

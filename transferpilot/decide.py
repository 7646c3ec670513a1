"""Decide how to transfer: the seed's size x similarity table, as a pure function.

=========  ==========================================  ======================================
           similar to ImageNet                          different from ImageNet
=========  ==========================================  ======================================
small      ``linear`` on the top-layer CNN codes         ``svm`` on the layer whose probe
           (or on the ImageNet head's log-probabilities  scores best (often an earlier one)
           when those probe better)
large      ``finetune``: leading layers that already     ``finetune`` the whole network, a
           match ImageNet stay frozen, pretrained        larger learning-rate ratio
           layers at 0.1x the head's learning rate
=========  ==========================================  ======================================

Size: the median number of training images per class against
``decide.large_images_per_class``. Similarity: the profile's score against
``decide.similarity_threshold``. A compute budget can veto fine-tuning (the
estimate comes from throughput measured once on this machine and cached, or
pinned as ``decide.train_images_per_s``); ``decide.strategy`` and
``decide.layer`` override the choice, and the reason says so.

The table is the *prior*. Where it picks a classifier on cached features, every
such candidate the profile cross-validated on held-in training rows competes —
softmax regression and the linear SVM on each layer, and the no-transfer
baseline (softmax regression and an RBF-kernel SVM on the raw pixels, strategy
``baseline``), and the pretrained ImageNet head as it is where the class names
name ImageNet classes (strategy ``pretrained``, scored on every training image) —
and the rule's pick is kept unless another candidate beats it
by more than one standard error of its CV accuracy. Fine-tuning is scored by
short trials on held-in training rows (:mod:`transferpilot.trial_plans`, within the
budget): on a small dataset, a trial that beats the head's pick by more than its
standard error earns fine-tuning its full run; on a large one the trials choose
the resolution (a truncated run underestimates the full one, so a lost trial
does not overrule the table's fine-tuning). Every candidate, its score
± spread, its cost and why it was not chosen are in ``decision.candidates``;
``transfer_gain`` is the chosen candidate's CV accuracy minus the baseline's.

>>> decision = choose_strategy(profile, DecideParams())  # doctest: +SKIP
>>> decision.strategy, decision.layer  # doctest: +SKIP
('svm', 'blocks.6')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferpilot._registry import JsonData
from transferpilot.config import DecideParams, TrainParams
from transferpilot.errors import ConfigError
from transferpilot.io import read_json
from transferpilot.layer_names import (
    JOIN,
    LOGITS,
    PIXELS,
    PRE_LOGITS,
    TOP_LAYERS,
    is_transfer,
    joinable,
    parts,
)
from transferpilot.profile import LayerProbe, Profile, training_size
from transferpilot.profile._probes import LINEAR_KINDS
from transferpilot.trial_plans import HELD_IN, TRIAL_SHARE, Plan, Trial, TrialReport, first_rung


@dataclass(frozen=True)
class Candidate:
    """One way to train that the decision weighed.

    ``score``: cross-validated accuracy on held-in training rows (fine-tuning: its
    trial's accuracy on the held-in rows; ``None`` where not trialled); ``spread``:
    its standard deviation over the folds (a trial's: the binomial standard error,
    ``folds`` 1); ``minutes``: the estimated training time where it matters
    (fine-tuning); ``verdict``: ``chosen``, or why not.
    """

    strategy: str
    layer: str
    score: float | None
    spread: float | None
    folds: int
    minutes: float | None
    transfer: bool
    verdict: str = ""
    input_size: int | None = None  # fine-tuning: the resolution it trains at


def candidate_input(row: Mapping[str, Any]) -> str:
    """What a candidate (a row of ``decision.candidates``, as JSON) trains on, in words."""
    if row.get("strategy") == "finetune" and row.get("input_size"):
        return f"the network at {row['input_size']} px"
    if not row.get("transfer", True):
        return "raw pixels (no transfer)"
    return str(row.get("layer"))


@dataclass(frozen=True)
class Decision(JsonData):
    """What to train, and why, in words that cite the numbers (``decision.json``).

    ``train`` is the plan the train stage carries out: params.yaml's ``train``
    settings that the chosen strategy reads, with the decision's epochs,
    learning-rate ratio and resolution where params.yaml leaves them open.
    ``frozen_layers``: the leading layers fine-tuning keeps frozen (unless
    ``train.freeze`` names parameters itself).
    """

    quadrant: str
    size: str
    domain: str
    strategy: str
    layer: str
    reason: str
    train: TrainParams = field(default_factory=TrainParams)
    frozen_layers: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    overridden: bool = False
    candidates: list[Candidate] = field(default_factory=list)
    baseline_score: float | None = None  # the best no-transfer candidate's CV accuracy
    transfer_gain: float | None = None  # the chosen candidate's CV accuracy minus that


def against(value: float, threshold: float, digits: int = 2) -> str:
    """``value`` with enough decimals that, read beside ``threshold``, it compares the
    way it truly does: 0.496 against 0.5 is "0.496", never "0.50 (< 0.5)"."""
    while digits < 6:
        shown = round(value, digits)
        if (shown < threshold) == (value < threshold) and (shown == threshold) == (
            value == threshold
        ):
            break
        digits += 1
    return f"{value:.{digits}f}"


def load_decision(path: Path) -> Decision:
    """The decide stage's ``decision.json`` at ``path``, or a clear error naming the stage
    to run first."""
    return Decision.from_dict(read_json(path, produced_by="decide"))


def _best(probes: list[LayerProbe]) -> LayerProbe:
    """Highest CV accuracy; ties go to the later (more specific, usually cheaper) layer."""
    return max(reversed(probes), key=lambda p: p.cv_accuracy)


def _linear_plan(
    profile: Profile, strategy: str, *, either_kind: bool = False
) -> tuple[str, str, LayerProbe | None, str]:
    """``(strategy, layer, probe, why)`` for ``linear`` (top layers) or ``svm`` (any layer).

    With ``either_kind``, an ``svm`` plan becomes ``linear`` (softmax
    regression) on the layer where that cross-validates strictly better than
    the best SVM probe; ties keep the SVM.
    """
    if strategy == "linear":
        top = [p for p in profile.probes if p.layer in TOP_LAYERS and p.kind in LINEAR_KINDS]
        if not top:
            return strategy, PRE_LOGITS, None, "the CNN codes"
        best = _best(top)
        what = (
            "the CNN codes (pre_logits)"
            if best.layer == PRE_LOGITS
            else "the ImageNet head's log-probabilities (logits), which probe better than the "
            "CNN codes: the pretrained classifier already separates these classes"
        )
        return strategy, best.layer, profile.probe(best.layer, "linear") or best, what
    layers = profile.layer_probes
    best = _best(layers)
    scores = ", ".join(f"{p.layer} {p.cv_accuracy:.3f}" for p in layers)
    what = f"layer {best.layer}, the best of the probed layers ({scores})"
    transfer = [p for p in profile.probes if is_transfer(p.layer) and p.kind in LINEAR_KINDS]
    mine = [p for p in transfer if p.kind == strategy]
    theirs = [p for p in transfer if p.kind != strategy]
    if mine and best.kind != strategy:
        best = _best(mine)  # the layers were probed with the other kind
    if either_kind and mine and theirs:
        rival = _best(theirs)
        if rival.cv_accuracy > best.cv_accuracy:
            own = best
            strategy, best = rival.kind, rival
            what = (
                f"layer {best.layer}, where a {_NAMES[rival.kind]} cross-validates better "
                f"({rival.cv_accuracy:.3f}) than the best {_NAMES[own.kind]} "
                f"({own.layer} {own.cv_accuracy:.3f}); probed layers: {scores}"
            )
    return strategy, best.layer, best, what


#: The nearest class mean, in a decision's words.
_NCM = "a nearest-class-mean classifier (SimpleShot: centred, unit-length codes)"

_NAMES = {
    "svm": "linear SVM",
    "linear": "softmax regression",
    "baseline": "RBF-kernel SVM",
    "ncm": "nearest class mean (SimpleShot)",
    "finetune": "fine-tuning",
    "pretrained": "pretrained ImageNet head",
}


def _frozen_layers(profile: Profile, rules: DecideParams, similar: bool) -> list[str]:
    """Similar data: the leading layers whose statistics already match ImageNet's."""
    frozen: list[str] = []
    if similar:
        for gap in profile.similarity.depth:
            if gap.layer in TOP_LAYERS or gap.overlap < rules.freeze_overlap:
                break
            frozen.append(gap.layer)
        frozen = frozen[: max(0, len(profile.layers) - 3)]  # always train the last stage
    return frozen


def finetune_size(profile: Profile) -> int | None:
    """The resolution to fine-tune at: the one throughput was measured at, else the rule's."""
    if profile.throughput is not None and profile.throughput.input_size:
        return profile.throughput.input_size
    if profile.input_size:
        return training_size(profile.size, profile.input_size)
    return None


def training_rates(profile: Profile, pinned: float | None = None) -> tuple[float, float] | None:
    """(train, eval) images/s the budget rule uses: ``pinned`` (``decide.train_images_per_s``;
    inference taken as 3x that) or the profile's measurement; ``None`` when neither."""
    if pinned:
        return pinned, 3.0 * pinned
    t = profile.throughput
    if t is None or t.train_images_per_s <= 0:
        return None
    return t.train_images_per_s, max(t.eval_images_per_s, 1e-9)


def finetune_minutes(profile: Profile, epochs: int, pinned: float | None = None) -> float | None:
    """Estimated fine-tuning time: epochs x (train images / train rate + val / eval rate)."""
    rates = training_rates(profile, pinned)
    if rates is None:
        return None
    n_train = profile.size.n_train
    n_eval = profile.size.n_images - n_train
    per_epoch = n_train / rates[0] + n_eval / rates[1]
    return epochs * per_epoch / 60.0


def _at(size: int | None) -> str:
    return f" at {size} px" if size else ""


def _check_layer(layer: str, profile: Profile) -> str:
    """``decide.layer``: one layer, ``pixels``, or layers joined by ``+`` (no logits)."""
    joined = JOIN in layer
    names = parts(layer) if joined else [layer]
    valid = [*profile.layers, PIXELS]
    if any(n not in valid or (joined and not joinable(n)) for n in names):
        raise ConfigError(
            f"decide.layer: {layer!r} is not a layer of {profile.model}; "
            f"valid: {', '.join(valid)}, or layers joined by {JOIN} "
            f"(e.g. {JOIN.join(profile.layers[-3:-1])}; not logits or pixels)"
        )
    return layer


def finetune_plans(profile: Profile, rules: DecideParams, train: TrainParams) -> list[Plan]:
    """The fine-tuning plans worth weighing: at the resolution throughput was measured at
    (the rule's: the model's, less for small images) and at the model's own, or at
    ``train.input_size`` alone where params.yaml sets it. Empty when no throughput is
    measured or pinned: nothing to cost them by."""
    rates = training_rates(profile, rules.train_images_per_s)
    if rates is None:
        return []
    measured = finetune_size(profile)
    known = {s for s in (measured, profile.input_size) if s}
    sizes: list[int | None] = [train.input_size] if train.input_size else sorted(known) or [None]
    similar = profile.similarity.score >= rules.similarity_threshold
    frozen = _frozen_layers(profile, rules, similar)
    ratio = train.lr_ratio or (rules.lr_ratio_similar if similar else rules.lr_ratio_different)
    minutes = finetune_minutes(profile, rules.finetune_epochs, rules.train_images_per_s) or 0.0
    plans = []
    for size in sizes:
        scale = (measured / size) ** 2 if measured and size else 1.0  # compute ~ pixels
        plans.append(Plan(size, ratio, frozen, rates[0] * scale, rates[1] * scale, minutes / scale))
    return plans


def trial_plans(
    profile: Profile, rules: DecideParams, train: TrainParams = TrainParams()
) -> tuple[list[Plan], float, str]:
    """``(plans, budget_s, why_not)``: the fine-tuning plans to trial and the trial budget
    (``decide.trial_minutes``, at most a third of the cheapest plan's full run, within
    ``decide.budget_minutes``), or no plans and why (see :mod:`transferpilot.trial_plans`)."""
    if rules.strategy != "auto" or rules.layer:
        return [], 0.0, "not trialled: the strategy is set by hand"
    if not rules.trial_minutes:
        return [], 0.0, "not trialled: trials are off (decide.trial_minutes)"
    plans = [p for p in finetune_plans(profile, rules, train) if p.input_size]
    if not plans:
        return [], 0.0, "not trialled: no throughput measured or pinned to budget a trial by"
    budget_s = 60.0 * min(rules.trial_minutes, TRIAL_SHARE * min(p.minutes for p in plans))
    if rules.budget_minutes is not None:
        plans = [p for p in plans if p.minutes + budget_s / 60.0 <= rules.budget_minutes]
    if not plans:
        return [], budget_s, f"not trialled: over the {rules.budget_minutes:g} min budget"
    held = round(HELD_IN * profile.size.n_train)  # about: the trial counts them exactly
    plans, _ = first_rung(
        plans,
        budget_s,
        fit=profile.size.n_train - held,
        held_in=held,
        classes=profile.size.n_classes,
    )
    if not plans:
        return (
            [],
            budget_s,
            (
                f"not trialled: an epoch on half the training images does not fit "
                f"{budget_s / 60:.1f} min (a third of the cheapest full run)"
            ),
        )
    large = profile.size.images_per_class["median"] >= rules.large_images_per_class
    if large and len(plans) < 2:
        return [], budget_s, "not trialled: one plan fits, the table's fine-tuning (large dataset)"
    return plans, budget_s, ""


def best_head(profile: Profile) -> float | None:
    """The best held-in score of a classifier on cached features (or raw pixels)."""
    return max((p.cv_accuracy for p in profile.probes), default=None)


# Long (191 lines) on purpose for now: issue #29 replaces this rule-then-evidence sequence
# with one budgeted tournament over every candidate; splitting it first would be rewritten.
def choose_strategy(  # noqa: C901, PLR0915  (see the comment above)
    profile: Profile,
    rules: DecideParams,
    train: TrainParams = TrainParams(),
    *,
    trials: TrialReport | None = None,
) -> Decision:
    """Apply the rules to the profile (see the module docstring); ``train`` is
    params.yaml's train section, which the decision's plan completes; ``trials``: the
    fine-tuning trials run for :func:`trial_plans` (none: fine-tuning has no score)."""
    size_n = profile.size.images_per_class["median"]
    score = profile.similarity.score
    large = size_n >= rules.large_images_per_class
    similar = score >= rules.similarity_threshold
    size, domain = ("large" if large else "small"), ("similar" if similar else "different")
    sim = profile.similarity
    size_words = (
        f"{'Large' if large else 'Small'} dataset: median {size_n:g} training images per class "
        f"({'≥' if large else '<'} {rules.large_images_per_class})"
    )
    parts = [f"the ImageNet head is {sim.certainty:.0%} certain"]
    if sim.overlap is not None:
        parts.append(f"features overlap ImageNet's statistics {sim.overlap:.2f}")
    sim_words = (
        f"{'similar to' if similar else 'different from'} ImageNet: "
        f"similarity {against(score, rules.similarity_threshold)} "
        f"({'≥' if similar else '<'} {rules.similarity_threshold}; {', '.join(parts)})"
    )
    auto = "finetune" if large else ("linear" if similar else "svm")
    evidence: dict[str, Any] = {
        "median_images_per_class": size_n,
        "similarity": score,
        "similarity_threshold": rules.similarity_threshold,
        "probes": {p.layer: p.cv_accuracy for p in profile.layer_probes},
        "second_opinion": {
            f"{p.kind} {p.layer}": p.cv_accuracy
            for p in profile.probes
            if p.kind != profile.probe_kind
        },
    }
    plans = finetune_plans(profile, rules, train)
    trial = trials.best() if trials is not None else None
    ft_plan = next((p for p in plans if trial and p.input_size == trial.input_size), None)
    ft_plan = ft_plan or next((p for p in plans if p.input_size == finetune_size(profile)), None)
    ft_plan = ft_plan or (plans[0] if plans else None)
    estimate = ft_plan.minutes if ft_plan is not None else None
    spent = trials.planned_s / 60.0 if trials is not None else 0.0
    evidence["finetune_minutes_estimate"] = estimate
    rates = training_rates(profile, rules.train_images_per_s)
    evidence["train_images_per_s"] = None if rates is None else rates[0]
    evidence["throughput_source"] = (
        "pinned" if rules.train_images_per_s else ("measured" if rates else None)
    )
    if trials is not None:
        evidence["trials"] = trials.to_dict()

    def fits(minutes: float | None) -> bool:
        budget = rules.budget_minutes
        return budget is None or minutes is None or minutes + spent <= budget

    notes: list[str] = []
    strategy = auto
    if rules.strategy != "auto":
        strategy = rules.strategy
        if strategy != auto:
            notes.append(f"Manual override: strategy {strategy} (the rules would choose {auto}).")
    elif auto == "finetune" and not fits(estimate):
        strategy = "svm"  # the best probe of either kind: see _linear_plan
        notes.append(
            f"Fine-tuning would take about {estimate:.0f} min ({rules.finetune_epochs} epochs at "
            f"{ft_plan.train_rate if ft_plan else 0:.1f} training images/s"
            f"{' (pinned)' if rules.train_images_per_s else ' here'}"
            f"{_at(ft_plan.input_size if ft_plan else None)}"
            f"{f', after {spent:.1f} min of trials' if spent else ''}), over the "
            f"{rules.budget_minutes:g} min budget: using the best probe that fits instead."
        )
    frozen: list[str] = []
    chosen: LayerProbe | None = None
    chosen_score: float | None = None
    switched = ""
    if strategy == "finetune":
        plan, frozen, action = _finetune(profile, rules, train, similar, ft_plan, trial)
        layer = PRE_LOGITS
        chosen_score = trial.accuracy if trial is not None else None
    elif strategy == "pretrained":
        layer, probe = LOGITS, profile.probe(LOGITS, "pretrained")
        if probe is None:
            raise ConfigError(
                "decide.strategy: pretrained needs class names that each name an ImageNet "
                "class (e.g. ants/bees, or WordNet ids such as n01440764); these do not"
            )
        action = f"{_PRETRAINED}; {_score(probe)}"
        chosen = probe
        plan = train.for_strategy(strategy)
    elif strategy == "ncm":
        layer, probe = PRE_LOGITS, profile.probe(PRE_LOGITS, "ncm")
        action = f"train {_NCM} on the CNN codes (pre_logits)"
        if probe is not None:
            action += f"; it cross-validates {_score(probe)}"
        chosen = probe
        plan = train.for_strategy(strategy)
    elif strategy == "baseline":
        layer, probe = PIXELS, profile.probe(PIXELS, "kernel")
        action = "train the no-transfer baseline, an RBF-kernel SVM on the raw pixels"
        if probe is not None:
            action += f"; it cross-validates {_score(probe)}"
        chosen = probe
        plan = train.for_strategy(strategy)
    else:
        either = rules.strategy == "auto" and not rules.layer and strategy == "svm"
        strategy, layer, probe, what = _linear_plan(profile, strategy, either_kind=either)
        if rules.layer:
            layer = _check_layer(rules.layer, profile)
            probe = profile.probe(layer, strategy) or profile.probe(layer)
            what = f"layer {layer} (manual override)"
        elif rules.strategy == "auto":
            rival = _evidence_pick(profile, probe)
            if rival is not None and probe is not None:
                switched = (
                    f" The table's pick would be a {_NAMES[strategy]} on {layer} "
                    f"({_score(probe)}); the {_NAMES[rival.strategy]} on "
                    f"{'the raw pixels' if rival.layer == PIXELS else rival.layer} beats it by "
                    f"{rival.cv_accuracy - probe.cv_accuracy:.3f}, more than one standard error."
                )
                strategy, layer, probe = rival.strategy, rival.layer, rival
                what = (
                    "the raw pixels: no transfer, the pretrained features do not help here"
                    if layer == PIXELS
                    else f"layer {layer}, the best of every candidate on held-in data"
                )
        if strategy == "pretrained":
            action = f"{_PRETRAINED}; {_score(probe)}" if probe is not None else _PRETRAINED
        else:
            kind = {
                "linear": "a linear classifier (softmax regression)",
                "svm": "a linear SVM",
                "baseline": "an RBF-kernel SVM",
                "ncm": _NCM,
            }[strategy]
            action = f"train {kind} on {what}"
            if probe is not None:
                action += f"; it cross-validates {_score(probe)} on held-in training data"
        chosen = probe
        plan = train.for_strategy(strategy)
        if (
            rules.strategy == "auto"
            and not rules.layer
            and not large
            and trial is not None
            and probe is not None
            and trial.accuracy - probe.cv_accuracy > max(trial.standard_error, 1e-9)
            and fits(estimate)
        ):  # a truncated trial beats the best head: fine-tuning has earned its run
            switched += (
                f" The table's pick would be a {_NAMES[strategy]} on "
                f"{'the raw pixels' if layer == PIXELS else layer} ({_score(probe)}); a short "
                f"fine-tuning trial scores {_trial_words(trial)}, more than one standard error "
                "above it, so the network is fine-tuned."
            )
            strategy, layer, chosen, chosen_score = "finetune", PRE_LOGITS, None, trial.accuracy
            plan, frozen, action = _finetune(profile, rules, train, similar, ft_plan, trial)
    if chosen is not None:
        chosen_score = chosen.cv_accuracy
    reason = f"{size_words}, {sim_words}. Decision: {action}." + switched
    if profile.backbones is not None:  # model.name auto: which network came first
        reason = f"{profile.backbones.reason} {reason}"
        evidence["backbone"] = profile.backbones.chosen
    if notes:
        reason += " " + " ".join(notes)
    why_not = (
        "trialled"
        if trials is not None
        else trial_plans(profile, rules, train)[2] or "not trialled"
    )
    candidates = _candidates(
        profile, strategy, layer, chosen_score, plans, ft_plan, trials, rules, large, fits, why_not
    )
    baseline = max((p.cv_accuracy for p in profile.baseline_probes), default=None)
    gain = None
    if chosen_score is not None and baseline is not None:
        gain = chosen_score - baseline
        if gain < 0 and strategy != "baseline":
            reason += (
                f" The no-transfer baseline cross-validates {baseline:.3f}, "
                f"{-gain:.3f} above this choice."
            )
    return Decision(
        quadrant=f"{size}/{domain}",
        size=size,
        domain=domain,
        strategy=strategy,
        layer=layer,
        reason=reason,
        train=plan,
        frozen_layers=frozen,
        evidence=evidence,
        overridden=rules.strategy != "auto" or bool(rules.layer),
        candidates=candidates,
        baseline_score=baseline,
        transfer_gain=gain,
    )


def _finetune(
    profile: Profile,
    rules: DecideParams,
    train: TrainParams,
    similar: bool,
    ft_plan: Plan | None,
    trial: Trial | None,
) -> tuple[TrainParams, list[str], str]:
    """The fine-tuning plan train carries out, its frozen layers, and the words for it."""
    frozen = _frozen_layers(profile, rules, similar)
    ratio = rules.lr_ratio_similar if similar else rules.lr_ratio_different
    plan = train.for_strategy(
        "finetune",
        epochs=train.epochs or rules.finetune_epochs,
        lr_ratio=train.lr_ratio or ratio,
        input_size=train.input_size
        or (ft_plan.input_size if ft_plan is not None else finetune_size(profile)),
    )
    action = (
        f"fine-tune the {'network' if frozen else 'whole network'}: train the "
        f"new head first on frozen features, then unfreeze (frozen: "
        f"{', '.join(frozen) or 'nothing'}) with pretrained layers at "
        f"{plan.lr_ratio:g}x the head's learning rate"
    )
    if ft_plan is not None:
        action += (
            f" (estimated {ft_plan.minutes:.0f} min for {rules.finetune_epochs} epochs here"
            f"{_at(plan.input_size)})"
        )
    if trial is not None:
        action += f"; its trial scores {_trial_words(trial)}"
    return plan, frozen, action


def _trial_words(trial: Trial) -> str:
    return (
        f"{trial.accuracy:.3f} ± {trial.standard_error:.3f} on {trial.held_in} held-in training "
        f"images ({trial.images} images x {trial.epochs} epoch(s) at {trial.input_size} px)"
    )


_PRETRAINED = (
    "use the pretrained ImageNet classifier as it is, restricted to the ImageNet classes the "
    "class names name (nothing trained but a temperature)"
)


def _score(probe: LayerProbe) -> str:
    if probe.kind == "pretrained":
        return (
            f"{probe.cv_accuracy:.3f} ± {probe.cv_std:.3f} on all {probe.images} training "
            "images (nothing fitted on them)"
        )
    spread = f" ± {probe.cv_std:.3f}" if probe.folds else ""
    return f"{probe.cv_accuracy:.3f}{spread} ({probe.folds or 'k'}-fold CV)"


def _evidence_pick(profile: Profile, prior: LayerProbe | None) -> LayerProbe | None:
    """The head candidate that beats the table's pick ``prior`` by more than one standard
    error of its own CV accuracy, if any (the best such); ties keep the prior."""
    if prior is None:
        return None
    best = max(reversed(profile.probes), key=lambda p: p.cv_accuracy, default=None)
    if best is None or best is prior:
        return None
    if best.cv_accuracy - prior.cv_accuracy > max(best.standard_error, 1e-9):
        return best
    return None


def _head_verdict(
    p: Any, strategy: str, layer: str, top: float | None, manual: bool, large: bool
) -> str:
    """Why the head probed as ``p`` was, or was not, chosen."""
    if p.strategy == strategy and p.layer == layer:
        return "chosen"
    if manual:
        return "not chosen: set by hand in params.yaml"
    if strategy == "finetune":
        return (
            "large dataset: fine-tuning preferred (the table's rule)"
            if large
            else "lower held-in score than fine-tuning's trial"
        )
    if top is not None and p.cv_accuracy > top:
        return f"+{p.cv_accuracy - top:.3f}, within one standard error: the table's pick kept"
    return f"lower held-in score ({p.cv_accuracy - (top or 0):+.3f})"


def _plan_verdict(
    plan: Plan | None,
    trial: Any,
    strategy: str,
    ft_plan: Plan | None,
    top: float | None,
    trials: TrialReport | None,
    rules: DecideParams,
    manual: bool,
    large: bool,
    fits: Any,
    why_not: str,
) -> str:
    """Why the fine-tuning ``plan`` was, or was not, chosen."""
    minutes = plan.minutes if plan is not None else None
    if strategy == "finetune" and plan is ft_plan:
        return "chosen"
    if manual:
        return "not chosen: set by hand in params.yaml"
    if not fits(minutes):
        return f"over the {rules.budget_minutes:g} min budget"
    if strategy == "finetune" and trial is not None:
        return "the other resolution's trial scored higher"
    if strategy == "finetune":
        return f"the table's resolution instead ({why_not})"
    if trial is not None and top is not None and trial.accuracy <= top:
        return f"lower held-in score ({trial.accuracy - top:+.3f}, a short trial)"
    if trial is not None:
        return "its trial does not beat the chosen head by more than one standard error"
    if trials is not None:
        return "not trialled: an epoch of it does not fit the trial budget"
    if large:
        return why_not
    return (
        f"small dataset (median < {rules.large_images_per_class} images per class): "
        f"a classifier on cached features instead ({why_not})"
    )


def _candidates(
    profile: Profile,
    strategy: str,
    layer: str,
    top: float | None,
    plans: list[Plan],
    ft_plan: Plan | None,
    trials: TrialReport | None,
    rules: DecideParams,
    large: bool,
    fits: Any,
    why_not: str,
) -> list[Candidate]:
    """Every candidate weighed, best score first, then the fine-tuning plans, with verdicts."""
    manual = rules.strategy != "auto" or bool(rules.layer)
    rows: list[Candidate] = []
    for p in sorted(profile.probes, key=lambda p: -p.cv_accuracy):
        verdict = _head_verdict(p, strategy, layer, top, manual, large)
        rows.append(
            Candidate(
                p.strategy,
                p.layer,
                p.cv_accuracy,
                p.cv_std,
                p.folds,
                None,
                is_transfer(p.layer),
                verdict,
            )
        )
    for plan in plans or [None]:
        trial = trials.of(plan.input_size) if trials is not None and plan is not None else None
        minutes = plan.minutes if plan is not None else None
        verdict = _plan_verdict(
            plan, trial, strategy, ft_plan, top, trials, rules, manual, large, fits, why_not
        )
        rows.append(
            Candidate(
                "finetune",
                PRE_LOGITS,
                None if trial is None else trial.accuracy,
                None if trial is None else trial.standard_error,
                0 if trial is None else 1,
                minutes,
                True,
                verdict,
                None if plan is None else plan.input_size,
            )
        )
    return rows

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
estimate comes from throughput measured on this machine); ``decide.strategy``
and ``decide.layer`` override the choice, and the reason says so.

>>> decision = choose_strategy(profile, DecideParams())  # doctest: +SKIP
>>> decision.strategy, decision.layer  # doctest: +SKIP
('svm', 'blocks.6')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transferpilot._registry import JsonData
from transferpilot.config import DecideParams
from transferpilot.errors import ConfigError
from transferpilot.profile import LayerProbe, Profile, training_size
from transferpilot.zoo import LOGITS, PRE_LOGITS

TOP_LAYERS = (PRE_LOGITS, LOGITS)


@dataclass(frozen=True)
class Decision(JsonData):
    """What to train, and why, in words that cite the numbers."""

    quadrant: str
    size: str
    domain: str
    strategy: str
    layer: str
    hyperparameters: dict[str, Any]
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    overridden: bool = False


def _best(probes: list[LayerProbe]) -> LayerProbe:
    """Highest CV accuracy; ties go to the later (more specific, usually cheaper) layer."""
    return max(reversed(probes), key=lambda p: p.cv_accuracy)


KIND = {"svm": "svm", "linear": "logistic"}  # strategy -> the probe kind it trains
STRATEGY = {kind: strategy for strategy, kind in KIND.items()}


def _linear_plan(
    profile: Profile, strategy: str, *, either_kind: bool = False
) -> tuple[str, str, LayerProbe | None, str]:
    """``(strategy, layer, probe, why)`` for ``linear`` (top layers) or ``svm`` (any layer).

    With ``either_kind``, an ``svm`` plan becomes ``linear`` (softmax
    regression) on the layer where that cross-validates strictly better than
    the best SVM probe; ties keep the SVM.
    """
    if strategy == "linear":
        top = [p for p in profile.probes if p.layer in TOP_LAYERS]
        if not top:
            return strategy, PRE_LOGITS, None, "the CNN codes"
        best = _best(top)
        what = (
            "the CNN codes (pre_logits)"
            if best.layer == PRE_LOGITS
            else "the ImageNet head's log-probabilities (logits), which probe better than the "
            "CNN codes: the pretrained classifier already separates these classes"
        )
        return strategy, best.layer, profile.probe(best.layer, "logistic") or best, what
    layers = profile.layer_probes
    best = _best(layers)
    scores = ", ".join(f"{p.layer} {p.cv_accuracy:.3f}" for p in layers)
    what = f"layer {best.layer}, the best of the probed layers ({scores})"
    mine = [p for p in profile.probes if p.kind == KIND[strategy]]
    theirs = [p for p in profile.probes if p.kind != KIND[strategy]]
    if mine and best.kind != KIND[strategy]:
        best = _best(mine)  # the layers were probed with the other kind
    if either_kind and mine and theirs:
        rival = _best(theirs)
        if rival.cv_accuracy > best.cv_accuracy:
            own = best
            strategy, best = STRATEGY[rival.kind], rival
            what = (
                f"layer {best.layer}, where a {_NAMES[rival.kind]} cross-validates better "
                f"({rival.cv_accuracy:.3f}) than the best {_NAMES[own.kind]} "
                f"({own.layer} {own.cv_accuracy:.3f}); probed layers: {scores}"
            )
    return strategy, best.layer, best, what


_NAMES = {"svm": "linear SVM", "logistic": "softmax regression"}


def _finetune_plan(profile: Profile, rules: DecideParams, similar: bool) -> dict[str, Any]:
    """Frozen leading layers and the learning-rate ratio of the pretrained layers."""
    frozen: list[str] = []
    if similar:
        for gap in profile.similarity.depth:
            if gap.layer in TOP_LAYERS or gap.overlap < rules.freeze_overlap:
                break
            frozen.append(gap.layer)
        frozen = frozen[: max(0, len(profile.layers) - 3)]  # always train the last stage
    ratio = rules.lr_ratio_similar if similar else rules.lr_ratio_different
    return {
        "epochs": rules.finetune_epochs,
        "frozen_layers": frozen,
        "lr_ratio": ratio,
        "head_warmup": True,
        "input_size": finetune_size(profile),
    }


def finetune_size(profile: Profile) -> int | None:
    """The resolution to fine-tune at: the one throughput was measured at, else the rule's."""
    if profile.throughput is not None and profile.throughput.input_size:
        return profile.throughput.input_size
    if profile.input_size:
        return training_size(profile.size, profile.input_size)
    return None


def finetune_minutes(profile: Profile, epochs: int) -> float | None:
    """Estimated fine-tuning time: epochs x (train images / train rate + val / eval rate)."""
    t = profile.throughput
    if t is None or t.train_images_per_s <= 0:
        return None
    n_train = profile.size.n_train
    n_eval = profile.size.n_images - n_train
    per_epoch = n_train / t.train_images_per_s + n_eval / max(t.eval_images_per_s, 1e-9)
    return epochs * per_epoch / 60.0


def _at(size: int | None) -> str:
    return f" at {size} px" if size else ""


def _check_layer(layer: str, profile: Profile) -> str:
    if layer not in profile.layers:
        raise ConfigError(
            f"decide.layer: {layer!r} is not a layer of {profile.model}; "
            f"valid: {', '.join(profile.layers)}"
        )
    return layer


def choose_strategy(profile: Profile, rules: DecideParams) -> Decision:
    """Apply the rules to the profile (see the module docstring)."""
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
        f"{'similar to' if similar else 'different from'} ImageNet: similarity {score:.2f} "
        f"({'≥' if similar else '<'} {rules.similarity_threshold}; {', '.join(parts)})"
    )
    auto = "finetune" if large else ("linear" if similar else "svm")
    evidence: dict[str, Any] = {
        "median_images_per_class": size_n,
        "similarity": score,
        "probes": {p.layer: p.cv_accuracy for p in profile.layer_probes},
        "second_opinion": {
            f"{p.kind} {p.layer}": p.cv_accuracy
            for p in profile.probes
            if p.kind != profile.probe_kind
        },
    }
    estimate = finetune_minutes(profile, rules.finetune_epochs)
    evidence["finetune_minutes_estimate"] = estimate
    notes: list[str] = []
    strategy = auto
    if rules.strategy != "auto":
        strategy = rules.strategy
        if strategy != auto:
            notes.append(f"Manual override: strategy {strategy} (the rules would choose {auto}).")
    elif (
        auto == "finetune"
        and rules.budget_minutes is not None
        and estimate is not None
        and estimate > rules.budget_minutes
    ):
        strategy = "svm"  # the best probe of either kind: see _linear_plan
        notes.append(
            f"Fine-tuning would take about {estimate:.0f} min ({rules.finetune_epochs} epochs at "
            f"{profile.throughput.train_images_per_s:.1f} training images/s here"
            f"{_at(finetune_size(profile))}), over the "
            f"{rules.budget_minutes:g} min budget: using the best probe that fits instead."
        )
    if strategy == "finetune":
        hyper = _finetune_plan(profile, rules, similar)
        layer = PRE_LOGITS
        frozen = ", ".join(hyper["frozen_layers"]) or "nothing"
        action = (
            f"fine-tune the {'network' if hyper['frozen_layers'] else 'whole network'}: train the "
            f"new head first on frozen features, then unfreeze (frozen: {frozen}) with "
            f"pretrained layers at {hyper['lr_ratio']:g}x the head's learning rate"
        )
        if estimate is not None:
            action += (
                f" (estimated {estimate:.0f} min for {hyper['epochs']} epochs here"
                f"{_at(hyper['input_size'])})"
            )
    else:
        either = rules.strategy == "auto" and not rules.layer and strategy == "svm"
        strategy, layer, probe, what = _linear_plan(profile, strategy, either_kind=either)
        if rules.layer:
            layer, probe = _check_layer(rules.layer, profile), profile.probe(rules.layer)
            what = f"layer {layer} (manual override)"
        kind = (
            "a linear classifier (softmax regression)" if strategy == "linear" else "a linear SVM"
        )
        action = f"train {kind} on {what}"
        if probe is not None:
            action += f"; its cross-validated probe accuracy is {probe.cv_accuracy:.3f}"
        hyper = {"layer": layer, "probe_c": probe.best_c if probe else None}
    reason = f"{size_words}, {sim_words}. Decision: {action}."
    if notes:
        reason += " " + " ".join(notes)
    return Decision(
        quadrant=f"{size}/{domain}",
        size=size,
        domain=domain,
        strategy=strategy,
        layer=layer,
        hyperparameters=hyper,
        reason=reason,
        evidence=evidence,
        overridden=rules.strategy != "auto" or bool(rules.layer),
    )

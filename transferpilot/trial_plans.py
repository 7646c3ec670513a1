"""Fine-tuning trials: a held-in score for fine-tuning, bought within the budget.

A classifier on cached features is scored by cross-validation in seconds;
fine-tuning cannot be. A *trial* trains a fine-tuning plan briefly — a
stratified subset of at least half the training rows, one epoch — and scores it on the
held-in rows the real run would early-stop on (never ``val``). Successive
halving: every plan that fits takes the first rung; only the best one, and
only while it is promising (its score plus two standard errors reaches the
best head's), is promoted to a second rung of more images and two epochs.

This module is the pure part the ``decide`` rule reads (plans, the schedule,
the results); :func:`transferpilot.finetune.trial_runs.run_trials` trains them.

The schedule is planned from the *estimated* cost (the throughput measured
once per machine, or pinned), never from the clock: the same folder and
params decide the same on an idle machine and under load. The time a trial
took is logged, not recorded (the same run writes the same ``decision.json``); its
planned cost counts against ``decide.budget_minutes``.

A truncated run underestimates what the full run reaches, so a trial is
evidence *for* fine-tuning when it wins and only weak evidence against it
when it loses: it can move a small dataset from a head to fine-tuning, and
it chooses among fine-tuning plans, but it never talks a large dataset out of
the table's fine-tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transferpilot._registry import JsonData

#: The share of each class's training images held in: fine-tuning early-stops on them, and
#: its trials are scored on them.
HELD_IN = 0.15
#: A trial costs at most this share of the full fine-tuning run of its cheapest plan
#: (about three epochs' worth of a ten-epoch run: one for the first rung, two for the second).
TRIAL_SHARE = 1 / 3
#: Of the trial budget, the share the first rung may spend (the rest: the promotion).
FIRST_RUNG = 1 / 3
#: Epochs of the second rung.
PROMOTED_EPOCHS = 2
#: A plan is promoted while its score + this many standard errors reaches the best head's.
PROMISING_SE = 2.0


@dataclass(frozen=True)
class Plan:
    """One way to fine-tune: its resolution and what its full run is estimated to cost.

    ``train_rate`` / ``eval_rate``: images/s at ``input_size`` on this machine
    (measured once, or pinned); ``minutes``: the full run (``finetune_epochs``).
    """

    input_size: int | None  # None: unknown (the model's)
    lr_ratio: float
    frozen: list[str]
    train_rate: float
    eval_rate: float
    minutes: float

    def seconds(self, images: int, epochs: int, held_in: int) -> float:
        """Estimated trial cost: the codes of ``images`` for the head's start (one
        inference pass), ``epochs`` of training on them, and scoring ``held_in``
        images after each epoch."""
        infer = (images + epochs * held_in) / self.eval_rate
        return infer + epochs * images / self.train_rate


@dataclass(frozen=True)
class Trial:
    """One plan trained on one rung: ``accuracy`` on ``held_in`` held-in training images
    after ``epochs`` epochs on ``images`` training images (the best epoch)."""

    input_size: int
    rung: int
    images: int
    epochs: int
    held_in: int
    accuracy: float
    planned_s: float

    @property
    def standard_error(self) -> float:
        """Binomial, of ``accuracy`` on the held-in images."""
        p = self.accuracy
        return math.sqrt(max(p * (1 - p), 0.0) / max(self.held_in, 1))


@dataclass(frozen=True)
class TrialReport(JsonData):
    """Every trial run, the budget and the cost planned, and why it stopped where it did."""

    trials: list[Trial] = field(default_factory=list)
    budget_s: float = 0.0
    planned_s: float = 0.0
    note: str = ""

    def best(self) -> Trial | None:
        """The plan that went furthest, at its last rung (the best of the first rung when
        none was promoted)."""
        if not self.trials:
            return None
        top = max(t.rung for t in self.trials)
        return max((t for t in self.trials if t.rung == top), key=lambda t: t.accuracy)

    def of(self, input_size: int) -> Trial | None:
        """The plan at ``input_size``'s last trial."""
        mine = [t for t in self.trials if t.input_size == input_size]
        return max(mine, key=lambda t: t.rung) if mine else None


def rung_images(
    plans: list[Plan], budget_s: float, *, epochs: int, held_in: int, available: int
) -> int:
    """The most training images (≤ ``available``) each of ``plans`` can train on for
    ``epochs`` within ``budget_s`` together (0 when not even one)."""
    per_image = sum(epochs / p.train_rate + 1 / p.eval_rate for p in plans)
    fixed = sum(epochs * held_in / p.eval_rate for p in plans)
    if per_image <= 0 or budget_s <= fixed:
        return 0
    return int(min(available, (budget_s - fixed) / per_image))


def first_rung(
    plans: list[Plan], budget_s: float, *, fit: int, held_in: int, classes: int
) -> tuple[list[Plan], int]:
    """The plans that take the first rung together, and its images: one epoch on at least
    half of the ``fit`` training images (two per class at least) each, within
    :data:`FIRST_RUNG` of ``budget_s``; the dearest plans drop out until that fits.
    ``([], 0)`` when not even the cheapest one does."""
    least = min(fit, max(2 * classes, fit // 2))
    live = sorted(plans, key=lambda p: p.seconds(1, 1, 0))
    while live:
        n = rung_images(live, FIRST_RUNG * budget_s, epochs=1, held_in=held_in, available=fit)
        if n >= max(least, 1):
            return live, n
        live = live[:-1]
    return [], 0


def promising(trial: Trial, rival: float | None) -> bool:
    """Worth more of the budget: no head to beat, or within reach of the best one."""
    return rival is None or trial.accuracy + PROMISING_SE * trial.standard_error >= rival

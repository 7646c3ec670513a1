"""Transferability per layer: cross-validated accuracy of a linear classifier on each layer."""

from __future__ import annotations

from dataclasses import dataclass

#: The linear strategies, which are also the probes' kinds.
LINEAR_KINDS = ("linear", "svm")
#: The no-transfer baseline's probes on the raw pixels: (kind, strategy).
BASELINE_KINDS = (("linear", "linear"), ("kernel", "baseline"))


@dataclass(frozen=True)
class LayerProbe:
    """One layer's probe: a ``kind`` classifier's cross-validated accuracy at its best C,
    and the standard deviation of that accuracy over the ``folds`` folds. Kind
    ``pretrained`` is the ImageNet head as it is: its accuracy on every training image,
    nothing fitted, and the binomial standard error (``folds`` 1)."""

    layer: str
    dim: int
    cv_accuracy: float
    best_c: float
    images: int
    kind: str = "svm"
    cv_std: float = 0.0
    folds: int = 0

    @property
    def strategy(self) -> str:
        """The strategy that trains this probe's classifier on its layer."""
        return "baseline" if self.kind == "kernel" else self.kind

    @property
    def standard_error(self) -> float:
        """Of the CV accuracy: the spread over folds / sqrt(folds)."""
        return self.cv_std / max(1, self.folds) ** 0.5

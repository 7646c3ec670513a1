"""The scikit-learn heads on cached features: softmax regression (``linear``), a linear
SVM (``svm``) and an RBF-kernel SVM (``kernel``: a Nyström map, then a linear SVM).

:class:`LinearClassifier` is a scikit-learn estimator (``fit`` returns ``self``, learned attributes
end in ``_``, ``clone`` works): a :class:`~sklearn.pipeline.Pipeline` of
standardisation and the classifier, with ``C`` chosen by stratified k-fold
cross-validation on the training rows over a grid.

``predict_proba`` is a softmax of the decision values divided by a temperature
(Guo et al., 2017) fitted on out-of-fold decision values of the training rows —
held-in data, never the validation split — so that an SVM's scores read as
probabilities too (the softmax of raw margins was 0.4 to 0.5 off in ECE).

It sits below the profile (whose layer probes are these estimators) and the strategies
(which train and ship them): importing it loads scikit-learn, never PyTorch.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score as balanced_accuracy
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from transferpilot.balance import IMBALANCED, imbalance
from transferpilot.calibration import fit_temperature
from transferpilot.margins import as_logits

if TYPE_CHECKING:
    from transferpilot.config import TrainParams

log = logging.getLogger(__name__)


class CenteredL2(TransformerMixin, BaseEstimator):
    """SimpleShot's CL2N (Wang et al. 2019): subtract the training rows' mean, then scale
    each row to unit length."""

    def fit(self, X: np.ndarray, y: Any = None) -> CenteredL2:
        self.mean_ = np.asarray(X, dtype=np.float64).mean(axis=0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        centred = np.asarray(X, dtype=np.float64) - self.mean_
        return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


class NearestClassMean(ClassifierMixin, BaseEstimator):
    """The nearest class mean, as a linear model: ``-|x - m_k|^2`` is ``2 x.m_k - |m_k|^2``
    up to a term every class shares, so ``coef_`` is ``2 m_k`` and ``intercept_`` is
    ``-|m_k|^2``, times ``C``, a scale of the scores (no effect on which class wins; the
    temperature calibrates it). Nothing is fitted but the means: no solver, no prior."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, X: np.ndarray, y: np.ndarray) -> NearestClassMean:
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        self.classes_ = np.unique(y)
        means = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        self.coef_ = 2.0 * self.C * means
        self.intercept_ = -self.C * (means * means).sum(axis=1)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]


class SoftmaxLinearSVC(LinearSVC):
    """:class:`LinearSVC` whose ``predict_proba`` is a softmax of the margins (uncalibrated)."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(as_logits(self.decision_function(X), "svm"), axis=1)


#: Nyström components of the ``kernel`` classifier, at most (one per training row below that).
KERNEL_COMPONENTS = 1000
#: What each kind of :class:`LinearClassifier` is, in the words of a decision's reason.
KIND_NAMES = {
    "linear": "softmax regression",
    "svm": "linear SVM",
    "kernel": "RBF-kernel SVM",
    "ncm": "nearest class mean (SimpleShot)",
}
#: The nearest class mean has no C to choose: its one "grid point".
NCM_GRID = (1.0,)


class LinearClassifier(ClassifierMixin, BaseEstimator):
    """Standardise, then a linear classifier whose C is chosen by stratified CV.

    ``kind``: ``linear`` (multinomial logistic, i.e. softmax regression), ``svm``,
    ``ncm``: the nearest class mean on centred, unit-length rows (SimpleShot; no C), or
    ``kernel``: an RBF kernel (``gamma`` = 1 / (features x variance), features not
    standardised) approximated by a Nyström map of up to :data:`KERNEL_COMPONENTS`
    training rows, then a linear SVM — a kernel SVM whose cost grows linearly with the rows.

    >>> probe = LinearClassifier(kind="linear").fit(X_train, y_train)  # doctest: +SKIP
    >>> probe.best_C_, probe.cv_accuracy_  # doctest: +SKIP
    (0.1, 0.93)
    """

    def __init__(
        self,
        kind: Literal["linear", "svm"] = "linear",
        c_grid: Sequence[float] = (0.0001, 0.001, 0.01, 0.1, 1.0),
        cv_folds: int = 5,
        max_iter: int = 2000,
        random_state: int = 0,
        n_jobs: int | None = None,
        tol: float = 1e-4,
        calibrate: bool = True,
        balance: bool = False,
    ) -> None:
        self.kind = kind
        self.c_grid = c_grid
        self.cv_folds = cv_folds
        self.max_iter = max_iter
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.tol = tol
        self.calibrate = calibrate
        self.balance = balance

    @classmethod
    def from_settings(cls, kind: str, settings: TrainParams) -> LinearClassifier:
        """The classifier the ``train`` settings describe (C grid, folds, iterations, seed)."""
        s = settings
        grid = s.kernel_c_grid if kind == "kernel" else NCM_GRID if kind == "ncm" else s.c_grid
        return cls(kind, grid, s.cv_folds, s.max_iter, s.seed, n_jobs=-1, balance=True)  # type: ignore[arg-type]

    def _steps(self, X: np.ndarray, folds: int) -> list[tuple[str, Any]]:
        if self.kind == "ncm":
            return [("normalise", CenteredL2()), ("clf", NearestClassMean())]
        if self.kind != "kernel":
            return [("scale", StandardScaler()), ("clf", self._classifier())]
        # Not standardised per feature: on raw pixels that inflates the near-constant
        # border pixels into noise (measured on the digits: 0.975 val accuracy against
        # 0.989). Scaled as a whole instead, by gamma = 1 / (features x variance), as
        # scikit-learn's SVC(gamma="scale").
        fitted_rows = len(X) - -(-len(X) // folds)  # the rows each CV fit sees
        nystroem = Nystroem(
            gamma=1.0 / (X.shape[1] * max(float(X.var()), 1e-12)),
            n_components=max(1, min(KERNEL_COMPONENTS, fitted_rows)),
            random_state=self.random_state,
        )
        return [("map", nystroem), ("clf", self._classifier())]

    def _classifier(self) -> Any:
        if self.kind == "linear":
            return LogisticRegression(
                max_iter=self.max_iter, tol=self.tol, random_state=self.random_state
            )
        if self.kind in ("svm", "kernel"):
            # Dual coordinate descent: measured 3-20x faster than the primal solver on
            # standardised CNN codes (1280-d); never more than a second slower on narrow layers.
            # Seeded: liblinear shuffles its coordinates, unseeded it differs run to run.
            return SoftmaxLinearSVC(
                max_iter=self.max_iter, tol=self.tol, dual=True, random_state=self.random_state
            )
        raise ValueError(f"kind must be one of {', '.join(KIND_NAMES)}, got {self.kind!r}")

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearClassifier:
        """Choose C by CV, refit on all of ``X``. Solver convergence warnings are silenced:
        the CV score already tells whether a C value works."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._fit(X, y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> LinearClassifier:
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        _, counts = np.unique(y, return_counts=True)
        if len(counts) < 2:
            raise ValueError("need at least two classes to fit a classifier")
        folds = max(2, min(self.cv_folds, int(counts.min())))
        self.imbalance_ = imbalance(y)
        weighted = self.balance and self.imbalance_ > IMBALANCED
        self.class_weight_: str | None = None
        self.prior_shift_: np.ndarray | None = None
        self.temperature_ = 1.0
        self.oof_proba_: np.ndarray | None = None
        pipeline = Pipeline(self._steps(X, folds))
        grid = list(self.c_grid)
        if int(counts.min()) < 2:  # too few to cross-validate: take the middle of the grid
            self.cv_scores_: list[dict[str, float]] = []
            self.best_C_ = float(grid[len(grid) // 2])
            self.cv_accuracy_ = self.cv_std_ = self.cv_balanced_accuracy_ = float("nan")
            self.model_ = pipeline.set_params(clf__C=self.best_C_).fit(X, y)
        else:
            cv = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
            # Imbalanced: class-weighted fits compete with unweighted ones, and the winner
            # is the one that cross-validates best in balanced accuracy (mean recall).
            weights = [None, "balanced"] if weighted and self.kind != "ncm" else [None]
            search = GridSearchCV(
                pipeline,
                {"clf__C": grid} | ({"clf__class_weight": weights} if self.kind != "ncm" else {}),
                cv=cv,
                scoring=("accuracy", "balanced_accuracy"),
                n_jobs=self.n_jobs,
                refit="balanced_accuracy" if weighted else "accuracy",
            ).fit(X, y)
            self._read_search(search.cv_results_, search.best_index_)
            self.model_ = search.best_estimator_
            targets = np.searchsorted(self.model_.classes_, y)
            if self.calibrate or weighted:
                logits = self._held_in_logits(self.model_, X, y, cv)
                self.temperature_ = fit_temperature(logits, targets) if self.calibrate else 1.0
                self.oof_proba_ = softmax(logits / self.temperature_, axis=1)
            if weighted:
                self._consider_prior_shift(X, y, targets, cv, search)
        self.cv_folds_ = folds
        self.cv_folds_ = folds
        self.classes_ = self.model_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def _held_in_logits(self, model: Any, X: np.ndarray, y: np.ndarray, cv: Any) -> np.ndarray:
        """Out-of-fold decision values of ``model``'s settings, as logits."""
        held_in = cross_val_predict(
            clone(model), X, y, cv=cv, method="decision_function", n_jobs=self.n_jobs
        )
        return as_logits(held_in, self.kind)

    def _consider_prior_shift(
        self, X: np.ndarray, y: np.ndarray, targets: np.ndarray, cv: Any, search: Any
    ) -> None:
        """The third way to balance, after class weights: the best unweighted fit with its
        calibrated scores less the log of each class's share (logit adjustment, Menon et al.
        2021: the Bayes rule for balanced accuracy). Kept where its out-of-fold balanced
        accuracy beats the grid's winner's, on the same folds."""
        winner = balanced_accuracy(targets, self.oof_proba_.argmax(1))
        plain = max(
            (i for i, r in enumerate(self.cv_scores_) if "class_weight" not in r),
            key=lambda i: (self.cv_scores_[i]["balanced_accuracy"], -i),
        )
        model = self.model_
        logits, temperature = np.log(self.oof_proba_), 1.0
        if self.class_weight_ is not None:  # the unweighted fit's own held-in scores
            model = clone(self.model_).set_params(
                clf__class_weight=None, clf__C=self.cv_scores_[plain]["C"]
            )
            logits = self._held_in_logits(model, X, y, cv)
            temperature = fit_temperature(logits, targets) if self.calibrate else 1.0
            logits = logits / temperature
        shares = np.bincount(targets, minlength=len(self.model_.classes_)) / len(targets)
        shift = -np.log(shares)
        shifted = balanced_accuracy(targets, (logits + shift).argmax(1))
        if shifted <= winner:
            return
        if model is not self.model_:
            self.model_ = model.fit(X, y)
            self.temperature_ = temperature
            self.oof_proba_ = softmax(logits, axis=1)
            self._read_search(search.cv_results_, plain)
        self.prior_shift_ = shift
        self.cv_balanced_accuracy_ = float(shifted)

    @property
    def rebalance_(self) -> str:
        """How an imbalanced set was balanced: ``prior shift``, ``class weights`` or ``none``."""
        if getattr(self, "prior_shift_", None) is not None:
            return "prior shift"
        return "class weights" if getattr(self, "class_weight_", None) else "none"

    def _read_search(self, res: dict[str, Any], best: int) -> None:
        """The CV scores per C (and class weight) and the chosen ones. Only the scores:
        GridSearchCV's own results carry fit timings, which would make the saved head
        differ from run to run."""
        self.cv_scores_ = [
            {"C": float(c), "accuracy": float(m), "std": float(s), "balanced_accuracy": float(b)}
            | ({"class_weight": w} if w is not None else {})
            for c, w, m, s, b in zip(
                res["param_clf__C"],
                res.get("param_clf__class_weight", [None] * len(res["param_clf__C"])),
                res["mean_test_accuracy"],
                res["std_test_accuracy"],
                res["mean_test_balanced_accuracy"],
                strict=True,
            )
        ]
        chosen = self.cv_scores_[best]
        self.best_C_ = chosen["C"]
        self.class_weight_ = chosen.get("class_weight")
        self.cv_accuracy_, self.cv_std_ = chosen["accuracy"], chosen["std"]
        self.cv_balanced_accuracy_ = chosen["balanced_accuracy"]

    def out_of_fold_proba(self) -> np.ndarray | None:
        """(rows fitted, classes) probabilities of each training row from the CV fit that
        did not see it (calibrated as :meth:`predict_proba`); ``None`` where no CV ran.
        Evidence about the training rows, not part of the model: never pickled."""
        return getattr(self, "oof_proba_", None)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("oof_proba_", None)
        return state

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "model_")
        if getattr(self, "prior_shift_", None) is not None:
            return self.classes_[self.predict_proba(X).argmax(1)]
        return self.model_.predict(np.asarray(X, dtype=np.float32))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``softmax(logits / temperature_)``: calibrated on held-in training rows; with a
        prior shift, less the log of each class's training share (as if classes were
        equally likely)."""
        scores = self.logits(X) / getattr(self, "temperature_", 1.0)
        shift = getattr(self, "prior_shift_", None)
        return softmax(scores if shift is None else scores + shift, axis=1)

    def logits(self, X: np.ndarray) -> np.ndarray:
        """(N, classes) decision values, before the temperature (see :func:`as_logits`)."""
        return as_logits(self.decision_function(X), self.kind)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.decision_function(np.asarray(X, dtype=np.float32))

    def cv_table(self) -> list[dict[str, float]]:
        """Mean CV accuracy for every C tried (empty when no CV could run)."""
        check_is_fitted(self, "model_")
        return list(self.cv_scores_)
